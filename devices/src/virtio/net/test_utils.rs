//! A mock virtio-net driver for the tests: guest memory, the two rings built with
//! virtio-queue's `MockSplitQueue`, and a stand-in for the VMM's event loop.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use crate::GuestMemoryMmap;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::device::Net;
use super::tap::{offload, Backend};
use super::{
    features, CONFIG_SPACE_SIZE, NUM_BUFFERS_OFFSET, NUM_QUEUES, RX_QUEUE, TX_QUEUE, VNET_HDR_LEN,
};
use crate::virtio::{ActivateParams, IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1};

/// Guest memory size (16 MiB).
pub(crate) const MEM_SIZE: usize = 0x100_0000;
/// Where the receiveq's rings live.
const RX_RING: u64 = 0x0;
/// Where the transmitq's rings live.
const TX_RING: u64 = 0x1_0000;
/// Start of the area for buffers.
pub(crate) const BUF: u64 = 0x10_0000;
/// Queue size used by the mock driver.
const QSIZE: u16 = 16;

/// One descriptor of a chain the mock driver posts: (address, length, writable).
pub(crate) type Buf = (u64, u32, bool);

/// A device-readable descriptor (transmit).
pub(crate) fn ro(addr: u64, len: u32) -> Buf {
    (addr, len, false)
}

/// A device-writable descriptor (receive).
pub(crate) fn wo(addr: u64, len: u32) -> Buf {
    (addr, len, true)
}

/// Guest memory of [`MEM_SIZE`] bytes at 0.
pub(crate) fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// A mock virtio driver: guest memory, the two rings and the next free descriptor.
pub(crate) struct Driver<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub rxq: MockSplitQueue<'a, GuestMemoryMmap>,
    pub txq: MockSplitQueue<'a, GuestMemoryMmap>,
    next_desc: [u16; NUM_QUEUES],
    pub irq: IrqTrigger,
}

impl<'a> Driver<'a> {
    pub(crate) fn new(mem: &'a GuestMemoryMmap) -> Self {
        Driver {
            mem,
            rxq: MockSplitQueue::create(mem, GuestAddress(RX_RING), QSIZE),
            txq: MockSplitQueue::create(mem, GuestAddress(TX_RING), QSIZE),
            next_desc: [0; NUM_QUEUES],
            irq: IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()),
        }
    }

    /// Activation parameters with both queues and `acked_features`.
    pub(crate) fn params(&self, acked_features: u64) -> ActivateParams {
        ActivateParams {
            mem: self.mem.clone(),
            queues: vec![
                self.rxq.create_queue::<Queue>().unwrap(),
                self.txq.create_queue::<Queue>().unwrap(),
            ],
            acked_features,
            irq: self.irq.clone(),
        }
    }

    /// Activates `net` with no offloads accepted.
    pub(crate) fn activate(&self, net: &mut Net) {
        net.activate(self.params(VIRTIO_F_VERSION_1 | features::MAC))
            .unwrap();
    }

    /// Posts one chain on `queue` made of `bufs`, in order; returns its head.
    pub(crate) fn post(&mut self, queue: usize, bufs: &[Buf]) -> u16 {
        let mock = if queue == RX_QUEUE {
            &self.rxq
        } else {
            &self.txq
        };
        let first = self.next_desc[queue];
        let descs: Vec<RawDescriptor> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, writable))| {
                let index = first + i as u16;
                let mut flags = 0;
                if writable {
                    flags |= VRING_DESC_F_WRITE as u16;
                }
                if i + 1 < bufs.len() {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, index + 1))
            })
            .collect();
        mock.add_desc_chains(&descs, first).unwrap();
        self.next_desc[queue] = first + bufs.len() as u16;
        first
    }

    /// Writes `bytes` at `addr` and posts them as a one-descriptor transmit chain.
    pub(crate) fn send(&mut self, addr: u64, bytes: &[u8]) -> u16 {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
        self.post(TX_QUEUE, &[ro(addr, bytes.len() as u32)])
    }

    /// The (head, len) pairs of the used ring of `queue`, in order.
    pub(crate) fn used(&self, queue: usize) -> Vec<(u32, u32)> {
        let mock = if queue == RX_QUEUE {
            &self.rxq
        } else {
            &self.txq
        };
        let idx = mock.used().idx().load();
        (0..idx)
            .map(|i| {
                let elem = mock.used().ring().ref_at(usize::from(i)).unwrap().load();
                (elem.id(), elem.len())
            })
            .collect()
    }

    /// `len` bytes of guest memory at `addr`.
    pub(crate) fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }
}

/// The device's event fd for `token`, as the VMM registers it.
pub(crate) fn event_fd_of(net: &Net, token: u32) -> RawFd {
    let fds = net.event_fds();
    assert_eq!(fds.len(), 3);
    let found: Vec<RawFd> = fds
        .iter()
        .filter(|&&(_, t)| t == token)
        .map(|&(fd, _)| fd)
        .collect();
    assert_eq!(found.len(), 1, "token {token}");
    found[0]
}

/// The fd the VMM watches for the TAP.
fn event_fd(net: &Net) -> RawFd {
    event_fd_of(net, super::TAP_EVENT_TOKEN)
}

/// Whether the VMM, watching the device's event fd level-triggered, would wake up
/// within `timeout_ms` (0: right now).
pub(crate) fn wakes_within(net: &Net, timeout_ms: i32) -> bool {
    let watcher = Epoll::new().unwrap();
    watcher
        .ctl(
            ControlOperation::Add,
            event_fd(net),
            EpollEvent::new(EventSet::IN, 0),
        )
        .unwrap();
    let mut events = [EpollEvent::default(); 1];
    watcher.wait(timeout_ms, &mut events).unwrap() > 0
}

/// Whether the VMM would wake up right now.
pub(crate) fn watched_readable(net: &Net) -> bool {
    wakes_within(net, 0)
}

pub(crate) const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
pub(crate) const ALL_OFFLOADS: u32 = offload::CSUM | offload::TSO4 | offload::TSO6 | offload::UFO;

/// What the mock TAP holds; shared between the device's backend and the test.
#[derive(Debug, Default)]
pub(crate) struct MockState {
    /// Frames the "host" sent, read by the device in order.
    pub(crate) rx: VecDeque<Vec<u8>>,
    /// Frames the device wrote.
    pub(crate) written: Vec<Vec<u8>>,
    /// Every TUNSETOFFLOAD argument, in order.
    pub(crate) offloads: Vec<u32>,
    /// Offload flags the mock accepts; others fail with EINVAL.
    pub(crate) supported: u32,
    /// Every read fails with this errno (after the queued frames are gone).
    pub(crate) read_error: Option<i32>,
    /// Every write fails with this errno.
    pub(crate) write_error: Option<i32>,
    pub(crate) reads: usize,
}

/// A TAP stand-in whose readiness fd is an eventfd, readable exactly when a read
/// would not return EAGAIN, like a TAP under level-triggered epoll.
#[derive(Debug, Clone)]
pub(crate) struct MockTap {
    state: Arc<Mutex<MockState>>,
    ready: Arc<EventFd>,
}

impl MockTap {
    pub(crate) fn new() -> MockTap {
        MockTap {
            state: Arc::new(Mutex::new(MockState {
                supported: ALL_OFFLOADS,
                ..MockState::default()
            })),
            ready: Arc::new(EventFd::new(EFD_NONBLOCK).unwrap()),
        }
    }

    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, MockState> {
        self.state.lock().unwrap()
    }

    /// Makes the eventfd's readability match the state.
    pub(crate) fn sync_ready(&self, state: &MockState) {
        let _ = self.ready.read();
        if !state.rx.is_empty() || state.read_error.is_some() {
            self.ready.write(1).unwrap();
        }
    }

    /// The host sends `frame` (header included) to the guest.
    pub(crate) fn push(&self, frame: Vec<u8>) {
        let mut state = self.state();
        state.rx.push_back(frame);
        self.sync_ready(&state);
    }

    pub(crate) fn set_read_error(&self, errno: Option<i32>) {
        let mut state = self.state();
        state.read_error = errno;
        self.sync_ready(&state);
    }

    pub(crate) fn set_write_error(&self, errno: Option<i32>) {
        self.state().write_error = errno;
    }

    pub(crate) fn written(&self) -> Vec<Vec<u8>> {
        self.state().written.clone()
    }
}

impl Backend for MockTap {
    fn name(&self) -> &str {
        "mocktap"
    }

    fn ready_fd(&self) -> RawFd {
        self.ready.as_raw_fd()
    }

    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut state = self.state();
        state.reads += 1;
        let result = match state.rx.pop_front() {
            Some(frame) => {
                let len = frame.len().min(buf.len());
                buf[..len].copy_from_slice(&frame[..len]);
                Ok(len)
            }
            None => Err(state.read_error.map_or_else(
                || io::Error::from(io::ErrorKind::WouldBlock),
                io::Error::from_raw_os_error,
            )),
        };
        self.sync_ready(&state);
        result
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        let mut state = self.state();
        if let Some(errno) = state.write_error {
            return Err(io::Error::from_raw_os_error(errno));
        }
        state.written.push(frame.to_vec());
        Ok(frame.len())
    }

    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        let mut state = self.state();
        state.offloads.push(flags);
        if flags & !state.supported != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(())
    }
}

/// A device on a mock TAP supporting `offloads`.
pub(crate) fn net_with(offloads: u32) -> (Net, MockTap) {
    let tap = MockTap::new();
    let net = Net::with_backend(Box::new(tap.clone()), offloads, MAC, 3).unwrap();
    (net, tap)
}

pub(crate) fn net() -> (Net, MockTap) {
    net_with(ALL_OFFLOADS)
}

/// `len` bytes of header (flags 0, num_buffers 0) and frame, byte i of the frame
/// being `seed + i`.
pub(crate) fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            if i < VNET_HDR_LEN {
                0
            } else {
                seed.wrapping_add(i as u8)
            }
        })
        .collect()
}

/// `bytes` as the guest receives it: num_buffers set to 1.
pub(crate) fn as_received(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes[NUM_BUFFERS_OFFSET] = 1;
    bytes
}

pub(crate) fn config(net: &Net) -> [u8; CONFIG_SPACE_SIZE] {
    let mut data = [0u8; CONFIG_SPACE_SIZE];
    net.read_config(0, &mut data);
    data
}
