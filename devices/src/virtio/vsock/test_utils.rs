//! A mock virtio-vsock driver for the tests: guest memory, three split rings, host
//! Unix sockets in a temporary directory, and a stand-in for the VMM's
//! level-triggered event loop.
//!
//! The rings are laid out here rather than by virtio-queue's `MockSplitQueue`,
//! whose layout overlaps the used ring with the upper half of the available ring
//! (its `end()` counts ring entries as bytes), which breaks 256-entry queues.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::tempdir::TempDir;

use super::packet::{op, Header, HDR_LEN, TYPE_STREAM};
use super::{
    Vsock, VsockConfig, EPOLL_EVENT_TOKEN, EVENT_QUEUE, HOST_CID, NUM_QUEUES, RX_QUEUE, TX_QUEUE,
};
use crate::virtio::test_utils::readable_within;
use crate::virtio::{ActivateParams, IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::GuestMemoryMmap;

pub(crate) const MEM_SIZE: usize = 0x400_0000;
pub(crate) const GUEST_CID: u64 = 3;
pub(crate) const QSIZE: u16 = 256;
const RINGS: [u64; NUM_QUEUES] = [0x0, 0x1_0000, 0x2_0000];
/// Buffers of each queue: `QSIZE` slots of `SLOT` bytes.
const BUFS: [u64; NUM_QUEUES] = [0x10_0000, 0x150_0000, 0x290_0000];
const SLOT: u64 = 0x1_2000;
/// A receive buffer big enough for a header and the largest payload.
pub(crate) const RX_BUF_LEN: u32 = 0x1_1000;
/// The guest port of the tests' connections.
pub(crate) const GUEST_PORT: u32 = 1234;

/// Offsets of the available and used rings from a queue's descriptor table.
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;

/// A ready queue of `QSIZE` entries with its rings at `base`.
fn ring_queue(base: u64) -> Queue {
    let mut queue = Queue::new(QSIZE).unwrap();
    queue.set_size(QSIZE);
    let split = |addr: u64| (Some(addr as u32), Some((addr >> 32) as u32));
    let (lo, hi) = split(base);
    queue.set_desc_table_address(lo, hi);
    let (lo, hi) = split(base + AVAIL);
    queue.set_avail_ring_address(lo, hi);
    let (lo, hi) = split(base + USED);
    queue.set_used_ring_address(lo, hi);
    queue.set_ready(true);
    queue
}

/// Sets the driver's avail index of `queue` (to break it).
pub(crate) fn set_avail_idx(mem: &GuestMemoryMmap, queue: usize, idx: u16) {
    mem.write_obj(idx, GuestAddress(RINGS[queue] + AVAIL + 2))
        .unwrap();
}

pub(crate) fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// A header from the guest to the host.
pub(crate) fn guest_header(src_port: u32, dst_port: u32, op: u16) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        kind: TYPE_STREAM,
        op,
        buf_alloc: 256 << 10,
        ..Header::default()
    }
}

/// The mock driver and the device under test.
pub(crate) struct Harness<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub irq: IrqTrigger,
    pub vsock: Vsock,
    /// Holds the socket directory for the harness's life.
    pub _dir: TempDir,
    pub uds: PathBuf,
    /// Next descriptor and slot per queue.
    next_desc: [u16; NUM_QUEUES],
    next_avail: [u16; NUM_QUEUES],
    /// Used entries already seen per queue.
    seen: [u16; NUM_QUEUES],
    /// Segments of each posted chain per queue, by head.
    chains: [HashMap<u16, Vec<(u64, u32)>>; NUM_QUEUES],
}

impl<'a> Harness<'a> {
    /// A device (not activated) on a fresh socket path.
    pub(crate) fn inactive(mem: &'a GuestMemoryMmap) -> Harness<'a> {
        let dir = TempDir::new().unwrap();
        let uds = dir.as_path().join("v.sock");
        let vsock = Vsock::new(&VsockConfig {
            guest_cid: GUEST_CID,
            uds_path: uds.clone(),
        })
        .unwrap();
        Harness {
            mem,
            irq: IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()),
            vsock,
            _dir: dir,
            uds,
            next_desc: [0; NUM_QUEUES],
            next_avail: [0; NUM_QUEUES],
            seen: [0; NUM_QUEUES],
            chains: Default::default(),
        }
    }

    /// An activated device.
    pub(crate) fn new(mem: &'a GuestMemoryMmap) -> Harness<'a> {
        let mut h = Harness::inactive(mem);
        let params = h.params();
        h.vsock.activate(params).unwrap();
        h
    }

    pub(crate) fn params(&self) -> ActivateParams {
        ActivateParams {
            mem: self.mem.clone(),
            queues: RINGS.iter().map(|&base| ring_queue(base)).collect(),
            acked_features: VIRTIO_F_VERSION_1,
            irq: self.irq.clone(),
        }
    }

    /// Posts a chain of (length, device-writable) buffers on `queue`, in fresh
    /// slots; returns the slot addresses.
    pub(crate) fn post(&mut self, queue: usize, bufs: &[(u32, bool)]) -> Vec<u64> {
        let n = bufs.len() as u16;
        let mut first = self.next_desc[queue];
        if first + n > QSIZE {
            first = 0;
        }
        self.next_desc[queue] = (first + n) % QSIZE;
        let mut segments = Vec::new();
        for (i, &(len, writable)) in bufs.iter().enumerate() {
            let index = first + i as u16;
            let addr = BUFS[queue] + u64::from(index) * SLOT;
            let mut flags = if writable {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            if i + 1 < bufs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let desc = Descriptor::new(addr, len, flags, index + 1);
            let at = GuestAddress(RINGS[queue] + u64::from(index) * 16);
            self.mem.write_obj(RawDescriptor::from(desc), at).unwrap();
            segments.push((addr, len));
        }
        let avail = GuestAddress(RINGS[queue] + AVAIL);
        let idx = self.next_avail[queue];
        let entry = avail.unchecked_add(4 + u64::from(idx % QSIZE) * 2);
        self.mem.write_obj(first, entry).unwrap();
        self.next_avail[queue] = idx.wrapping_add(1);
        self.mem
            .write_obj(self.next_avail[queue], avail.unchecked_add(2))
            .unwrap();
        self.chains[queue].insert(first, segments.clone());
        segments.into_iter().map(|(addr, _)| addr).collect()
    }

    /// Posts `n` one-descriptor receive buffers and notifies the device.
    pub(crate) fn post_rx(&mut self, n: usize) {
        for _ in 0..n {
            self.post(RX_QUEUE, &[(RX_BUF_LEN, true)]);
        }
        self.vsock.process_queue(RX_QUEUE);
    }

    /// Puts a packet on the txq, the header and payload in one descriptor or
    /// (`split`) in two, without notifying.
    pub(crate) fn queue_packet(&mut self, header: &Header, data: &[u8], split: bool) {
        let mut header = *header;
        header.len = data.len() as u32;
        let mut bytes = header.to_bytes().to_vec();
        if split && !data.is_empty() {
            let addrs = self.post(
                TX_QUEUE,
                &[(HDR_LEN as u32, false), (data.len() as u32, false)],
            );
            self.mem
                .write_slice(&bytes, GuestAddress(addrs[0]))
                .unwrap();
            self.mem.write_slice(data, GuestAddress(addrs[1])).unwrap();
        } else {
            bytes.extend_from_slice(data);
            let addrs = self.post(TX_QUEUE, &[(bytes.len() as u32, false)]);
            self.mem
                .write_slice(&bytes, GuestAddress(addrs[0]))
                .unwrap();
        }
    }

    /// Sends a packet from the guest (one descriptor) and notifies the device.
    pub(crate) fn send(&mut self, header: &Header, data: &[u8]) {
        self.queue_packet(header, data, false);
        self.vsock.process_queue(TX_QUEUE);
    }

    /// Sends raw bytes as a tx chain of one descriptor.
    pub(crate) fn send_raw(&mut self, bytes: &[u8]) {
        let addrs = self.post(TX_QUEUE, &[(bytes.len() as u32, false)]);
        self.mem.write_slice(bytes, GuestAddress(addrs[0])).unwrap();
        self.vsock.process_queue(TX_QUEUE);
    }

    /// New used entries of `queue` as (head, len).
    pub(crate) fn new_used(&mut self, queue: usize) -> Vec<(u16, u32)> {
        let used = RINGS[queue] + USED;
        let idx: u16 = self.mem.read_obj(GuestAddress(used + 2)).unwrap();
        let mut out = Vec::new();
        while self.seen[queue] != idx {
            let entry = used + 4 + u64::from(self.seen[queue] % QSIZE) * 8;
            let id: u32 = self.mem.read_obj(GuestAddress(entry)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(entry + 4)).unwrap();
            out.push((id as u16, len));
            self.seen[queue] = self.seen[queue].wrapping_add(1);
        }
        out
    }

    /// Packets the device put on the rxq since the last call.
    pub(crate) fn rx_packets(&mut self) -> Vec<(Header, Vec<u8>)> {
        self.new_used(RX_QUEUE)
            .into_iter()
            .map(|(head, len)| {
                let mut bytes = Vec::new();
                for &(addr, seg) in &self.chains[RX_QUEUE][&head] {
                    let mut buf = vec![0u8; seg as usize];
                    self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
                    bytes.extend(buf);
                }
                bytes.truncate(len as usize);
                assert!(bytes.len() >= HDR_LEN, "rx packet of {len} bytes");
                let header = Header::from_bytes(bytes[..HDR_LEN].try_into().unwrap());
                let data = bytes[HDR_LEN..].to_vec();
                assert_eq!(header.len as usize, data.len(), "{header:?} used len {len}");
                (header, data)
            })
            .collect()
    }

    /// The first 4 bytes of each new eventq entry.
    pub(crate) fn events(&mut self) -> Vec<Vec<u8>> {
        self.new_used(EVENT_QUEUE)
            .into_iter()
            .map(|(head, len)| {
                let (addr, _) = self.chains[EVENT_QUEUE][&head][0];
                let mut buf = vec![0u8; len as usize];
                self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
                buf
            })
            .collect()
    }

    /// Whether the device's fd is readable within `ms`.
    pub(crate) fn readable(&self, ms: i32) -> bool {
        let fds = self.vsock.event_fds();
        assert_eq!(fds.len(), 1);
        readable_within(fds[0].0, ms)
    }

    /// The event loop: handles the device's fd while it becomes readable within
    /// `ms` (at most 50 rounds).
    pub(crate) fn pump(&mut self, ms: i32) {
        for _ in 0..50 {
            if !self.readable(ms) {
                return;
            }
            self.vsock.process_event(EPOLL_EVENT_TOKEN);
        }
    }

    /// A host process connecting to the device's socket and asking for `port`;
    /// returns the stream and the REQUEST the guest receives.
    pub(crate) fn host_connect(&mut self, port: u32) -> (UnixStream, Header) {
        let mut stream = UnixStream::connect(&self.uds).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        writeln!(stream, "CONNECT {port}").unwrap();
        self.pump(200);
        let packets = self.rx_packets();
        assert_eq!(packets.len(), 1, "{packets:?}");
        (stream, packets[0].0)
    }

    /// A host-initiated connection the guest accepted: the stream (its `OK` line
    /// read) and the request's header.
    pub(crate) fn established(&mut self) -> (UnixStream, Header) {
        self.post_rx(8);
        let (mut stream, req) = self.host_connect(GUEST_PORT);
        let resp = guest_header(GUEST_PORT, req.src_port, op::RESPONSE);
        self.send(&resp, &[]);
        let expect = format!("OK {}\n", req.src_port);
        let mut line = vec![0u8; expect.len()];
        stream.read_exact(&mut line).unwrap();
        assert_eq!(line, expect.as_bytes());
        (stream, req)
    }
}
