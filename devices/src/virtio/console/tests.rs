//! Console tests: a guest simulated with virtio-queue's `MockSplitQueue`, guest
//! output captured in a shared `Vec<u8>`.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use crate::GuestMemoryMmap;
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::virtio::{
    device_type, ActivateError, ActivateParams, IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1,
    VIRTIO_MMIO_INT_VRING,
};

/// Guest memory size (4 MiB).
const MEM_SIZE: u64 = 0x40_0000;
/// Where the receiveq's rings live.
const RX_RING: u64 = 0x0;
/// Where the transmitq's rings live.
const TX_RING: u64 = 0x1_0000;
/// Start of the area for buffers.
const BUF: u64 = 0x10_0000;
/// Where [`Driver::open`] puts the transmit buffer that opens the console.
const OPEN_BUF: u64 = 0x38_0000;
/// Queue size used by the mock driver.
const QSIZE: u16 = 16;

/// A writer whose bytes the test can read back.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    fn contents(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer that always fails, like a closed pipe.
struct BrokenWriter;

impl Write for BrokenWriter {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::from(io::ErrorKind::BrokenPipe))
    }

    fn flush(&mut self) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

/// One descriptor of a chain the mock driver posts.
#[derive(Clone, Copy)]
struct Buf {
    addr: u64,
    len: u32,
    device_writable: bool,
}

/// A device-readable buffer (for the transmitq).
fn ro(addr: u64, len: u32) -> Buf {
    Buf {
        addr,
        len,
        device_writable: false,
    }
}

/// A device-writable buffer (for the receiveq).
fn wo(addr: u64, len: u32) -> Buf {
    Buf {
        addr,
        len,
        device_writable: true,
    }
}

/// A mock virtio driver: guest memory, the two rings and the next free descriptor.
struct Driver<'a> {
    mem: &'a GuestMemoryMmap,
    rxq: MockSplitQueue<'a, GuestMemoryMmap>,
    txq: MockSplitQueue<'a, GuestMemoryMmap>,
    rx_next_desc: u16,
    tx_next_desc: u16,
    irq: IrqTrigger,
}

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

impl<'a> Driver<'a> {
    fn new(mem: &'a GuestMemoryMmap) -> Self {
        Driver {
            mem,
            rxq: MockSplitQueue::create(mem, GuestAddress(RX_RING), QSIZE),
            txq: MockSplitQueue::create(mem, GuestAddress(TX_RING), QSIZE),
            rx_next_desc: 0,
            tx_next_desc: 0,
            irq: IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()),
        }
    }

    fn params(&self) -> ActivateParams {
        ActivateParams {
            mem: self.mem.clone(),
            queues: vec![
                self.rxq.create_queue::<Queue>().unwrap(),
                self.txq.create_queue::<Queue>().unwrap(),
            ],
            acked_features: VIRTIO_F_VERSION_1,
            irq: self.irq.clone(),
        }
    }

    fn activate(&self, console: &mut Console) {
        console.activate(self.params()).unwrap();
    }

    /// Activates the console and opens it as Linux does before input can flow:
    /// the driver transmits once (a prompt, at [`OPEN_BUF`]).
    fn open(&mut self, console: &mut Console) {
        self.activate(console);
        self.send(OPEN_BUF, b"$ ");
        console.process_queue(TX_QUEUE);
    }

    /// Posts one chain on `queue` made of `bufs`, in order.
    fn post(&mut self, queue: usize, bufs: &[Buf]) {
        let (mock, next) = match queue {
            RX_QUEUE => (&self.rxq, &mut self.rx_next_desc),
            _ => (&self.txq, &mut self.tx_next_desc),
        };
        let first = *next;
        let descs: Vec<RawDescriptor> = bufs
            .iter()
            .enumerate()
            .map(|(i, buf)| {
                let index = first + i as u16;
                let mut flags = 0;
                if buf.device_writable {
                    flags |= VRING_DESC_F_WRITE as u16;
                }
                if i + 1 < bufs.len() {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                RawDescriptor::from(SplitDescriptor::new(buf.addr, buf.len, flags, index + 1))
            })
            .collect();
        mock.add_desc_chains(&descs, first).unwrap();
        *next = first + bufs.len() as u16;
    }

    /// Writes `data` into guest memory and posts it as a one-descriptor TX chain.
    fn send(&mut self, addr: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
        self.post(TX_QUEUE, &[ro(addr, data.len() as u32)]);
    }

    /// The (head, len) pairs of the used ring of `queue`, in order.
    fn used(&self, queue: usize) -> Vec<(u32, u32)> {
        let mock = match queue {
            RX_QUEUE => &self.rxq,
            _ => &self.txq,
        };
        let idx = mock.used().idx().load();
        (0..idx)
            .map(|i| {
                let elem = mock.used().ring().ref_at(usize::from(i)).unwrap().load();
                (elem.id(), elem.len())
            })
            .collect()
    }

    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }
}

fn console() -> (Console, SharedBuf) {
    let (console, _room, out) = console_with_room();
    (console, out)
}

/// A console, the eventfd it signals when it has room for input again, its output.
fn console_with_room() -> (Console, EventFd, SharedBuf) {
    let out = SharedBuf::default();
    let room = EventFd::new(EFD_NONBLOCK).unwrap();
    let console = Console::new(Box::new(out.clone()), room.try_clone().unwrap());
    (console, room, out)
}

#[test]
fn console_identity_reports_console_two_queues_and_features() {
    let (console, _) = console();

    assert_eq!(console.device_type(), device_type::CONSOLE);
    assert_eq!(console.queue_max_sizes(), &[256, 256]);
    assert_eq!(
        console.avail_features(),
        VIRTIO_F_VERSION_1 | VIRTIO_CONSOLE_F_SIZE
    );
}

#[test]
fn read_config_whole_space_returns_80x25_then_zeros() {
    let (console, _) = console();
    let mut data = [0xffu8; 16];

    console.read_config(0, &mut data);

    assert_eq!(&data[0..2], &80u16.to_le_bytes());
    assert_eq!(&data[2..4], &25u16.to_le_bytes());
    assert!(data[4..].iter().all(|&b| b == 0));
}

#[test]
fn read_config_hostile_offsets_return_zeros_without_panic() {
    let (console, _) = console();
    let mut rows = [0u8; 2];
    console.read_config(2, &mut rows);
    assert_eq!(rows, 25u16.to_le_bytes());

    for offset in [12, 0x1000, u64::MAX - 1, u64::MAX] {
        let mut data = [0xffu8; 8];
        console.read_config(offset, &mut data);
        assert_eq!(data, [0; 8], "offset {offset:#x}");
    }
}

#[test]
fn write_config_any_write_ignored() {
    let (mut console, _) = console();

    console.write_config(0, &[1, 2, 3, 4]);
    console.write_config(u64::MAX, &[1]);

    let mut data = [0u8; 4];
    console.read_config(0, &mut data);
    assert_eq!(data, [80, 0, 25, 0]);
}

#[test]
fn activate_wrong_queue_count_fails() {
    let mem = memory();
    let driver = Driver::new(&mem);
    let (mut console, _) = console();
    let mut params = driver.params();
    params.queues.pop();

    let err = console.activate(params).unwrap_err();

    assert!(matches!(
        err,
        ActivateError::QueueCount {
            expected: 2,
            got: 1
        }
    ));
}

#[test]
fn activate_queue_not_ready_fails() {
    let mem = memory();
    let driver = Driver::new(&mem);
    let (mut console, _) = console();
    let mut params = driver.params();
    params.queues[1].set_ready(false);

    let err = console.activate(params).unwrap_err();

    assert!(matches!(err, ActivateError::QueueNotReady(1)));
}

#[test]
fn tx_chains_with_several_descriptors_written_to_output_in_order() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut console, out) = console();
    driver.activate(&mut console);
    mem.write_slice(b"hello, ", GuestAddress(BUF)).unwrap();
    mem.write_slice(b"world", GuestAddress(BUF + 0x100))
        .unwrap();
    mem.write_slice(b"!\n", GuestAddress(BUF + 0x200)).unwrap();
    driver.post(
        TX_QUEUE,
        &[ro(BUF, 7), ro(BUF + 0x100, 5), ro(BUF + 0x200, 2)],
    );
    driver.send(BUF + 0x300, b"second\n");
    driver.send(BUF + 0x400, b"third\n");

    console.process_queue(TX_QUEUE);

    assert_eq!(out.contents(), b"hello, world!\nsecond\nthird\n");
    assert_eq!(driver.used(TX_QUEUE), vec![(0, 0), (3, 0), (4, 0)]);
    assert_eq!(
        driver.irq.status() & VIRTIO_MMIO_INT_VRING,
        VIRTIO_MMIO_INT_VRING
    );
}

#[test]
fn tx_avail_index_jump_needs_reset_once() {
    let mem = memory();
    let driver = Driver::new(&mem);
    let (mut console, out) = console();
    driver.activate(&mut console);
    driver.txq.avail().idx().store(0x8000);

    console.process_queue(TX_QUEUE);
    console.process_queue(TX_QUEUE);

    assert!(driver.irq.needs_reset());
    assert!(!driver.irq.fail(), "already failed");
    assert!(driver.used(TX_QUEUE).is_empty());
    assert!(out.contents().is_empty());
}

#[test]
fn tx_head_past_the_table_needs_reset() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut console, out) = console();
    driver.activate(&mut console);
    driver.send(BUF, b"lost\n");
    driver
        .txq
        .avail()
        .ring()
        .ref_at(0)
        .unwrap()
        .store(u16::MAX.to_le());

    console.process_queue(TX_QUEUE);

    assert!(driver.irq.needs_reset());
    assert!(driver.used(TX_QUEUE).is_empty());
    assert!(out.contents().is_empty());
}

#[test]
fn tx_after_failure_ignored() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut console, out) = console();
    driver.activate(&mut console);
    driver.irq.fail();
    driver.send(BUF, b"ignored\n");

    console.process_queue(TX_QUEUE);

    assert!(out.contents().is_empty());
}

#[test]
fn tx_device_writable_descriptor_skipped() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut console, out) = console();
    driver.activate(&mut console);
    mem.write_slice(b"ab", GuestAddress(BUF)).unwrap();
    mem.write_slice(b"XX", GuestAddress(BUF + 0x100)).unwrap();
    mem.write_slice(b"cd", GuestAddress(BUF + 0x200)).unwrap();
    driver.post(
        TX_QUEUE,
        &[ro(BUF, 2), wo(BUF + 0x100, 2), ro(BUF + 0x200, 2)],
    );
    driver.post(TX_QUEUE, &[wo(BUF + 0x100, 2)]);

    console.process_queue(TX_QUEUE);

    assert_eq!(out.contents(), b"abcd");
    assert_eq!(driver.used(TX_QUEUE), vec![(0, 0), (3, 0)]);
}

#[test]
fn tx_descriptor_outside_memory_skipped_without_panic() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut console, out) = console();
    driver.activate(&mut console);
    mem.write_slice(b"ok", GuestAddress(BUF)).unwrap();
    driver.post(
        TX_QUEUE,
        &[
            ro(MEM_SIZE + 0x1000, 16),
            ro(MEM_SIZE - 4, 16),
            ro(u64::MAX - 2, 8),
            ro(BUF, 2),
        ],
    );
    driver.send(BUF + 0x100, b"!");

    console.process_queue(TX_QUEUE);

    assert_eq!(out.contents(), b"ok!");
    assert_eq!(driver.used(TX_QUEUE), vec![(0, 0), (4, 0)]);
}

#[test]
fn tx_chain_over_cap_truncated_at_cap() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut console, out) = console();
    driver.activate(&mut console);
    let big = u32::try_from(MAX_TX_CHAIN_BYTES).unwrap();
    mem.write_slice(&vec![b'a'; MAX_TX_CHAIN_BYTES * 2], GuestAddress(BUF))
        .unwrap();
    driver.post(TX_QUEUE, &[ro(BUF, big - 10), ro(BUF, 100), ro(BUF, 100)]);

    console.process_queue(TX_QUEUE);

    assert_eq!(out.contents().len(), MAX_TX_CHAIN_BYTES);
    assert_eq!(driver.used(TX_QUEUE), vec![(0, 0)]);
}

#[test]
fn tx_output_error_drops_data_and_returns_chains() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let mut console = Console::new(Box::new(BrokenWriter), EventFd::new(EFD_NONBLOCK).unwrap());
    driver.activate(&mut console);
    driver.send(BUF, b"lost");
    driver.send(BUF + 0x100, b"also lost");

    console.process_queue(TX_QUEUE);

    assert_eq!(driver.used(TX_QUEUE), vec![(0, 0), (1, 0)]);
    assert_eq!(console.dropped_output_bytes(), 13);
}

#[test]
fn tx_notified_before_activation_ignored() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut console, out) = console();
    driver.send(BUF, b"early");

    console.process_queue(TX_QUEUE);

    assert!(out.contents().is_empty());
    assert!(driver.used(TX_QUEUE).is_empty());
}

#[test]
fn process_queue_nonexistent_index_ignored() {
    let mem = memory();
    let driver = Driver::new(&mem);
    let (mut console, _) = console();
    driver.activate(&mut console);

    console.process_queue(2);
    console.process_queue(usize::MAX);

    assert_eq!(driver.irq.status(), 0);
}

#[test]
fn rx_input_before_activation_delivered_once_console_open() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut console, _) = console();
    assert_eq!(console.enqueue_input(b"ls\n"), 3);
    driver.post(RX_QUEUE, &[wo(BUF, 64)]);

    driver.open(&mut console);

    assert_eq!(driver.used(RX_QUEUE), vec![(0, 3)]);
    assert_eq!(driver.read(BUF, 3), b"ls\n");
    assert_eq!(
        driver.irq.status() & VIRTIO_MMIO_INT_VRING,
        VIRTIO_MMIO_INT_VRING
    );
}

#[test]
fn rx_input_with_buffers_available_delivered_immediately() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut console, _) = console();
    driver.post(RX_QUEUE, &[wo(BUF, 64)]);
    driver.open(&mut console);

    assert_eq!(console.enqueue_input(b"x"), 1);

    assert_eq!(driver.used(RX_QUEUE), vec![(0, 1)]);
    assert_eq!(driver.read(BUF, 1), b"x");
}

#[test]
fn rx_input_larger_than_one_buffer_split_over_several() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut console, _) = console();
    driver.post(RX_QUEUE, &[wo(BUF, 4)]);
    driver.post(RX_QUEUE, &[wo(BUF + 0x100, 2), wo(BUF + 0x200, 3)]);
    driver.post(RX_QUEUE, &[wo(BUF + 0x300, 64)]);
    driver.open(&mut console);

    console.enqueue_input(b"0123456789ab");

    assert_eq!(driver.used(RX_QUEUE), vec![(0, 4), (1, 5), (3, 3)]);
    assert_eq!(driver.read(BUF, 4), b"0123");
    assert_eq!(driver.read(BUF + 0x100, 2), b"45");
    assert_eq!(driver.read(BUF + 0x200, 3), b"678");
    assert_eq!(driver.read(BUF + 0x300, 3), b"9ab");
}

#[test]
fn rx_no_buffers_input_pending_until_next_process_queue() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut console, _) = console();
    driver.open(&mut console);

    assert_eq!(console.enqueue_input(b"wait"), 4);
    assert!(driver.used(RX_QUEUE).is_empty());
    driver.post(RX_QUEUE, &[wo(BUF, 64)]);
    console.process_queue(RX_QUEUE);

    assert_eq!(driver.used(RX_QUEUE), vec![(0, 4)]);
    assert_eq!(driver.read(BUF, 4), b"wait");
}

#[test]
fn rx_device_readable_descriptor_skipped_and_chain_returned_empty() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut console, _) = console();
    mem.write_slice(b"keep", GuestAddress(BUF)).unwrap();
    driver.post(RX_QUEUE, &[ro(BUF, 4)]);
    driver.post(RX_QUEUE, &[ro(BUF, 4), wo(BUF + 0x100, 8)]);
    driver.open(&mut console);

    console.enqueue_input(b"in");

    assert_eq!(driver.used(RX_QUEUE), vec![(0, 0), (1, 2)]);
    assert_eq!(driver.read(BUF, 4), b"keep");
    assert_eq!(driver.read(BUF + 0x100, 2), b"in");
}

#[test]
fn rx_descriptor_past_memory_end_counts_only_written_bytes() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut console, _) = console();
    driver.post(RX_QUEUE, &[wo(MEM_SIZE - 4, 16), wo(BUF, 16)]);
    driver.post(RX_QUEUE, &[wo(MEM_SIZE + 0x1000, 16)]);
    driver.post(RX_QUEUE, &[wo(BUF + 0x100, 16)]);
    driver.open(&mut console);

    console.enqueue_input(b"abcdefghij");

    assert_eq!(driver.used(RX_QUEUE), vec![(0, 4), (2, 0), (3, 6)]);
    assert_eq!(driver.read(MEM_SIZE - 4, 4), b"abcd");
    assert_eq!(driver.read(BUF + 0x100, 6), b"efghij");
}

#[test]
fn rx_input_over_capacity_refused_kept_by_caller_then_room_signalled() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut console, room, _) = console_with_room();
    let input: Vec<u8> = (0..INPUT_BUFFER_CAPACITY + 100)
        .map(|i| (i % 251) as u8)
        .collect();

    let accepted = console.enqueue_input(&input);
    let accepted_when_full = console.enqueue_input(b"more");

    assert_eq!(accepted, INPUT_BUFFER_CAPACITY);
    assert_eq!(accepted_when_full, 0);
    assert!(room.read().is_err(), "no room was made yet");
    let cap = u32::try_from(INPUT_BUFFER_CAPACITY).unwrap();
    driver.post(RX_QUEUE, &[wo(BUF, cap + 1)]);
    driver.open(&mut console);
    assert_eq!(driver.used(RX_QUEUE), vec![(0, cap)]);
    assert_eq!(room.read().unwrap(), 1);
    assert_eq!(console.enqueue_input(&input[accepted..]), 100);
    driver.post(RX_QUEUE, &[wo(BUF + 0x10_0000, 200)]);
    console.process_queue(RX_QUEUE);
    assert_eq!(driver.used(RX_QUEUE), vec![(0, cap), (1, 100)]);
    let mut delivered = driver.read(BUF, INPUT_BUFFER_CAPACITY);
    delivered.extend(driver.read(BUF + 0x10_0000, 100));
    assert_eq!(delivered, input);
}

#[test]
fn rx_input_over_capacity_with_buffers_accepted_up_to_guest_room() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut console, _) = console();
    let big = u32::try_from(INPUT_BUFFER_CAPACITY).unwrap();
    driver.post(RX_QUEUE, &[wo(BUF, big)]);
    driver.open(&mut console);
    let input = vec![b'z'; INPUT_BUFFER_CAPACITY * 2 + 7];

    let accepted = console.enqueue_input(&input);

    assert_eq!(accepted, INPUT_BUFFER_CAPACITY * 2);
    assert_eq!(driver.used(RX_QUEUE), vec![(0, big)]);
    assert_eq!(console.pending_input_bytes(), INPUT_BUFFER_CAPACITY);
}

#[test]
fn rx_guest_posting_small_buffers_slowly_gets_every_byte_in_order() {
    // The VMM's side: keep what the device refused, offer it again on each signal.
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut console, room, _) = console_with_room();
    driver.open(&mut console);
    let input: Vec<u8> = (0..3 * INPUT_BUFFER_CAPACITY + 5)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut offset = console.enqueue_input(&input);
    let mut received = Vec::new();
    let mut posted = 0u16;
    assert!(input.len() <= 1024 * usize::from(QSIZE));

    while received.len() < input.len() {
        // One 1 KiB buffer at a time, reused: the guest read the previous one.
        driver.post(RX_QUEUE, &[wo(BUF, 1024)]);
        console.process_queue(RX_QUEUE);
        let (_, len) = driver.used(RX_QUEUE)[usize::from(posted)];
        received.extend(driver.read(BUF, usize::try_from(len).unwrap()));
        posted += 1;
        assert!(posted < QSIZE, "no progress");
        if room.read().is_ok() {
            offset += console.enqueue_input(&input[offset..]);
        }
    }

    assert_eq!(offset, input.len());
    assert_eq!(received, input);
}

#[test]
fn rx_input_held_until_driver_first_transmits() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut console, _) = console();
    driver.post(RX_QUEUE, &[wo(BUF, 64)]);
    driver.activate(&mut console);

    let accepted = console.enqueue_input(b"early");
    console.process_queue(RX_QUEUE);
    assert_eq!(accepted, 5);
    assert!(driver.used(RX_QUEUE).is_empty(), "console not open yet");
    driver.send(OPEN_BUF, b"$ ");
    console.process_queue(TX_QUEUE);

    assert_eq!(driver.used(RX_QUEUE), vec![(0, 5)]);
    assert_eq!(driver.read(BUF, 5), b"early");
}

#[test]
fn reset_closes_the_console_until_the_next_driver_transmits() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut console, _) = console();
    driver.open(&mut console);
    console.reset();
    console.enqueue_input(b"later");
    let mem2 = memory();
    let mut driver2 = Driver::new(&mem2);
    driver2.post(RX_QUEUE, &[wo(BUF, 64)]);

    driver2.activate(&mut console);
    console.process_queue(RX_QUEUE);

    assert!(driver2.used(RX_QUEUE).is_empty());
}

#[test]
fn reset_after_activation_stops_delivery() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut console, out) = console();
    driver.activate(&mut console);
    driver.post(RX_QUEUE, &[wo(BUF, 64)]);
    driver.send(BUF + 0x100, b"after reset");

    console.reset();
    let accepted = console.enqueue_input(b"typed");
    console.process_queue(RX_QUEUE);
    console.process_queue(TX_QUEUE);

    assert_eq!(accepted, 5);
    assert!(driver.used(RX_QUEUE).is_empty());
    assert!(driver.used(TX_QUEUE).is_empty());
    assert!(out.contents().is_empty());
    assert_eq!(driver.irq.status(), 0);
}

#[test]
fn reset_then_reactivate_delivers_input_kept_pending() {
    let mem = memory();
    let driver = Driver::new(&mem);
    let (mut console, _) = console();
    driver.activate(&mut console);
    console.reset();
    console.enqueue_input(b"later");
    let mem2 = memory();
    let mut driver2 = Driver::new(&mem2);
    driver2.post(RX_QUEUE, &[wo(BUF, 64)]);

    driver2.open(&mut console);

    assert_eq!(driver2.used(RX_QUEUE), vec![(0, 5)]);
    assert_eq!(driver2.read(BUF, 5), b"later");
    assert!(driver.used(RX_QUEUE).is_empty());
}
