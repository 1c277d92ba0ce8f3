//! Targets for the virtio devices and their transport: guest memory from the input
//! (see [`crate::queue`]), then the device model does what a queue notification
//! makes it do.

use std::cell::RefCell;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use devices::bus::BusDevice;
use devices::virtio::block::{Block, BlockConfig, CacheType, SECTOR_SIZE};
use devices::virtio::console::Console;
use devices::virtio::mmio::{MmioTransport, MMIO_WINDOW_SIZE};
use devices::virtio::net::frame::{complete_rx_header, read_tx_frame, write_rx_frame};
use devices::virtio::net::MAX_BUFFER_LEN;
use devices::virtio::rng::Rng;
use devices::virtio::vsock::{Vsock, VsockConfig, EPOLL_EVENT_TOKEN, RX_QUEUE, TX_QUEUE};
use devices::virtio::{ActivateParams, IrqTrigger, VirtioDevice};
use devices::GuestMemoryMmap;
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::tempfile::TempFile;

use crate::queue::{Guest, MEM_SIZE};

/// Sectors of the block target's disk.
const DISK_SECTORS: u64 = 64;
/// Most chains one net target run takes from a queue (the queue holds 16; the
/// available index may claim more, which virtio-queue refuses).
const MAX_CHAINS: usize = 64;

fn irq() -> Option<IrqTrigger> {
    EventFd::new(EFD_NONBLOCK).ok().map(IrqTrigger::new)
}

/// Activates `device` with the guest's queues and all the features it offers.
fn activate(device: &mut dyn VirtioDevice, guest: Guest) -> Option<()> {
    let params = ActivateParams {
        mem: guest.mem,
        queues: guest.queues,
        acked_features: device.avail_features(),
        irq: irq()?,
    };
    device.activate(params).ok()
}

thread_local! {
    /// The block target's disk, one per thread (the replay test runs threads).
    static DISK: RefCell<Option<TempFile>> = const { RefCell::new(None) };
}

fn disk_path() -> Option<PathBuf> {
    DISK.with(|disk| {
        let mut disk = disk.borrow_mut();
        if disk.is_none() {
            let file = TempFile::new().ok()?;
            let len = usize::try_from(DISK_SECTORS * SECTOR_SIZE).ok()?;
            file.as_file().write_all_at(&vec![0x5a; len], 0).ok()?;
            *disk = Some(file);
        }
        disk.as_ref().map(|file| file.as_path().to_path_buf())
    })
}

/// virtio-blk: the request queue processed by the real device over a 64-sector
/// temp file. Options: bit 0 read-only, bit 1 write-back cache (flushes honoured),
/// bit 2 process the queue twice (a second notification after the first pass).
pub fn block(data: &[u8]) {
    let Some(guest) = Guest::new(data, 1) else {
        return;
    };
    let Some(path) = disk_path() else {
        return;
    };
    let flags = guest.options[0];
    let config = BlockConfig {
        path,
        read_only: flags & 1 != 0,
        cache_type: if flags & 2 != 0 {
            CacheType::Writeback
        } else {
            CacheType::Unsafe
        },
        ..BlockConfig::default()
    };
    let Ok(mut block) = Block::new(&config) else {
        return;
    };
    let passes = if flags & 4 != 0 { 2 } else { 1 };
    if activate(&mut block, guest).is_some() {
        for _ in 0..passes {
            block.process_queue(0);
        }
    }
}

/// virtio-net frames: every receive chain gets a frame of the length the options
/// give (header completed as for a TAP frame), every transmit chain is gathered as
/// for the TAP, both with cabin's frame code over the guest's chains.
pub fn net(data: &[u8]) {
    let Some(guest) = Guest::new(data, 2) else {
        return;
    };
    let rx_len = usize::from(guest.option_u16(0)).min(MAX_BUFFER_LEN);
    let guest_csum = guest.options[2] & 1 != 0;
    let mut frame: Vec<u8> = (0..rx_len).map(|i| i.to_le_bytes()[0]).collect();
    complete_rx_header(&mut frame, guest_csum);
    let mem = guest.mem.clone();
    let mut queues = guest.queues.into_iter();
    if let Some(mut rx) = queues.next() {
        drain(&mut rx, &mem, |chain| {
            write_rx_frame(&mem, chain, &frame).unwrap_or(0)
        });
    }
    let mut tx_frame = Vec::new();
    if let Some(mut tx) = queues.next() {
        drain(&mut tx, &mem, |chain| {
            let _ = read_tx_frame(&mem, chain, &mut tx_frame);
            0
        });
    }
}

/// Pops at most [`MAX_CHAINS`] chains from `queue`, passing each to `serve` and
/// putting it on the used ring with the length `serve` returns.
fn drain<F>(queue: &mut Queue, mem: &GuestMemoryMmap, mut serve: F)
where
    F: FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
{
    for _ in 0..MAX_CHAINS {
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            break;
        };
        let head = chain.head_index();
        let used = serve(chain);
        let _ = queue.add_used(mem, head, used);
    }
}

/// virtio-console: host input of the length the options give is queued, then the
/// transmit queue, the receive queue and the transmit queue again are processed.
pub fn console(data: &[u8]) {
    let Some(guest) = Guest::new(data, 2) else {
        return;
    };
    let input_len = usize::from(guest.option_u16(0) % 8192);
    let Ok(input_room) = EventFd::new(EFD_NONBLOCK) else {
        return;
    };
    let mut console = Console::new(Box::new(io::sink()), input_room);
    if activate(&mut console, guest).is_none() {
        return;
    }
    let input: Vec<u8> = (0..input_len).map(|i| b'a' + (i % 26) as u8).collect();
    console.enqueue_input(&input);
    for queue in [1, 0, 1, 0] {
        console.process_queue(queue);
    }
}

/// virtio-rng: the request queue processed by the real device.
pub fn rng(data: &[u8]) {
    let Some(guest) = Guest::new(data, 1) else {
        return;
    };
    let Ok(mut rng) = Rng::new(None) else {
        return;
    };
    if activate(&mut rng, guest).is_some() {
        rng.process_queue(0);
    }
}

thread_local! {
    /// The vsock target's directory (its device socket and a host listener on
    /// port 5000), one per thread.
    static VSOCK_DIR: RefCell<Option<(vmm_sys_util::tempdir::TempDir, std::os::unix::net::UnixListener)>> =
        const { RefCell::new(None) };
}

/// The directory of this thread's vsock sockets, with a host listener at
/// `v.sock_5000` (guest-initiated connections to port 5000 reach it).
fn vsock_dir() -> Option<PathBuf> {
    VSOCK_DIR.with(|dir| {
        let mut dir = dir.borrow_mut();
        if dir.is_none() {
            let tmp =
                vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/cabin-fuzz-vsock").ok()?;
            let listener =
                std::os::unix::net::UnixListener::bind(tmp.as_path().join("v.sock_5000")).ok()?;
            listener.set_nonblocking(true).ok()?;
            *dir = Some((tmp, listener));
        }
        dir.as_ref().map(|(tmp, _)| tmp.as_path().to_path_buf())
    })
}

/// virtio-vsock (guest CID 3) with its Unix-socket backend: when option bit 0 is
/// set a host process connects first and asks for port 1234; then the transmit
/// queue (the guest's packets: requests, data, credit, shutdowns, resets), the
/// device's sockets, the receive queue and the transmit queue again are processed.
pub fn vsock(data: &[u8]) {
    let Some(guest) = Guest::new(data, 3) else {
        return;
    };
    let Some(dir) = vsock_dir() else {
        return;
    };
    let flags = guest.options[0];
    let config = VsockConfig {
        guest_cid: 3,
        uds_path: dir.join("v.sock"),
    };
    let Ok(mut vsock) = Vsock::new(&config) else {
        return;
    };
    let host = if flags & 1 != 0 {
        std::os::unix::net::UnixStream::connect(&config.uds_path)
            .and_then(|mut stream| {
                io::Write::write_all(&mut stream, b"CONNECT 1234\n").map(|()| stream)
            })
            .ok()
    } else {
        None
    };
    if activate(&mut vsock, guest).is_none() {
        return;
    }
    vsock.process_event(EPOLL_EVENT_TOKEN);
    vsock.process_queue(TX_QUEUE);
    vsock.process_event(EPOLL_EVENT_TOKEN);
    vsock.process_queue(RX_QUEUE);
    vsock.process_queue(TX_QUEUE);
    drop(host);
    vsock.process_event(EPOLL_EVENT_TOKEN);
}

/// The virtio-mmio transport over a real device (virtio-rng, whose queue it also
/// runs), driven by a sequence of operations, each an opcode byte then its operands:
/// - `0`: read: width code, offset (u16 LE);
/// - `1`: write: width code, offset (u16 LE), then `width` bytes of data;
/// - `2`: a queue notification: queue index byte;
/// - `3`: the driver writes guest memory: address (u16 LE), length byte, bytes.
///
/// Widths by code (mod 6): 1, 2, 4, 8, 0, 3. An access never crosses the end of the
/// register window: the bus only hands the transport accesses inside it.
pub fn mmio(data: &[u8]) {
    let Ok(mem) = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]) else {
        return;
    };
    let Ok(rng) = Rng::new(None) else {
        return;
    };
    let Some(irq) = irq() else {
        return;
    };
    let device: Arc<Mutex<dyn VirtioDevice>> = Arc::new(Mutex::new(rng));
    let Ok(mut transport) = MmioTransport::new(mem.clone(), device, irq) else {
        return;
    };
    let mut ops = Ops { data, at: 0 };
    while let Some(op) = ops.byte() {
        match op % 4 {
            0 | 1 => {
                let Some((width, offset)) = ops.access() else {
                    return;
                };
                if op % 4 == 0 {
                    let mut buf = [0u8; 8];
                    transport.read(offset, &mut buf[..width]);
                } else {
                    let Some(bytes) = ops.take(width) else {
                        return;
                    };
                    transport.write(offset, bytes);
                }
            }
            2 => {
                let Some(queue) = ops.byte() else {
                    return;
                };
                transport.process_queue(usize::from(queue));
            }
            _ => {
                let (Some(addr), Some(len)) = (ops.u16(), ops.byte()) else {
                    return;
                };
                let Some(bytes) = ops.take(usize::from(len)) else {
                    return;
                };
                let _ = mem.write_slice(bytes, GuestAddress(u64::from(addr)));
            }
        }
    }
}

/// A cursor over the mmio target's operations.
struct Ops<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Ops<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let bytes = self.data.get(self.at..end)?;
        self.at = end;
        Some(bytes)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    /// Width and offset of a register access, the access kept inside the window.
    fn access(&mut self) -> Option<(usize, u64)> {
        const WIDTHS: [usize; 6] = [1, 2, 4, 8, 0, 3];
        let width = WIDTHS[usize::from(self.byte()?) % WIDTHS.len()];
        let offset = u64::from(self.u16()?);
        let room = MMIO_WINDOW_SIZE - width as u64 + 1;
        Some((width, offset % room))
    }
}
