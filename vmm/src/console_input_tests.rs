//! Tests of console input: the pending buffer alone, then the whole path (a pipe
//! or a file as stdin, the event loop, a serial port whose "guest" is the test).

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread;

use devices::bus::BusDevice;
use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;

const RBR: u64 = 0;
const IER: u64 = 1;
const IER_RX_DATA: u8 = 0x01;
const MCR: u64 = 4;
const MCR_OUT2: u8 = 0x08;
const LSR: u64 = 5;
const LSR_DATA_READY: u8 = 0x01;
/// Bounds one wait of the event loop; only a hang reaches it.
const WAIT_MS: i32 = 10_000;

#[test]
fn pending_push_beyond_room_takes_only_room() {
    let mut pending = PendingInput::new(8);

    assert_eq!(pending.push(b"hello"), 5);
    assert_eq!(pending.push(b"world"), 3);

    assert_eq!(pending.len(), 8);
    assert_eq!(pending.room(), 0);
    assert_eq!(pending.push(b"!"), 0);
}

#[test]
fn pending_feed_refused_bytes_stay_in_order() {
    let mut pending = PendingInput::new(8);
    pending.push(b"abcdefgh");
    let mut got = Vec::new();

    let first = pending.feed(|b| {
        got.extend_from_slice(&b[..3]);
        3
    });
    // The ring wraps: new bytes land where "abc" was.
    pending.push(b"xyz");
    let rest = pending.feed(|b| {
        got.extend_from_slice(b);
        b.len()
    });

    assert_eq!(first, 3);
    assert_eq!(rest, 8);
    assert_eq!(got, b"abcdefghxyz");
    assert!(pending.is_empty());
}

#[test]
fn pending_feed_nothing_taken_keeps_everything() {
    let mut pending = PendingInput::new(8);
    pending.push(b"abc");

    assert_eq!(pending.feed(|_| 0), 0);

    assert_eq!(pending.len(), 3);
}

#[test]
fn pending_feed_sink_claiming_more_than_offered_counts_only_offered() {
    let mut pending = PendingInput::new(8);
    pending.push(b"abc");

    assert_eq!(pending.feed(|_| usize::MAX), 3);

    assert!(pending.is_empty());
}

/// Drives a [`ConsoleInput`] in a real event loop.
struct Harness(ConsoleInput);

impl MutEventSubscriber for Harness {
    fn init(&mut self, ops: &mut EventOps) {
        assert!(self.0.watch(ops));
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        assert!(self.0.process(events.fd(), events.event_set(), ops));
    }
}

struct Setup {
    manager: EventManager<Arc<Mutex<Harness>>>,
    harness: Arc<Mutex<Harness>>,
    serial: Arc<Mutex<Serial>>,
}

/// A serial port fed from `stdin_fd` through a [`ConsoleInput`] in an event loop.
fn setup(stdin_fd: RawFd) -> Setup {
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let room = EventFd::new(EFD_NONBLOCK).unwrap();
    let mut serial = Serial::new(irq, room.try_clone().unwrap(), Box::new(io::sink())).unwrap();
    // The guest's driver listens (which signals room: start from a quiet eventfd).
    serial.write(MCR, &[MCR_OUT2]);
    serial.write(IER, &[IER_RX_DATA]);
    let _ = room.read();
    let serial = Arc::new(Mutex::new(serial));
    let input = ConsoleInput::new(ConsoleDevice::Serial(serial.clone()), room, stdin_fd);
    let harness = Arc::new(Mutex::new(Harness(input)));
    let mut manager = EventManager::new().unwrap();
    manager.add_subscriber(harness.clone());
    Setup {
        manager,
        harness,
        serial,
    }
}

impl Setup {
    /// What a guest does: reads the receive FIFO until it is empty.
    fn guest_drains_fifo(&self, into: &mut Vec<u8>) {
        let mut serial = lock(&self.serial);
        let mut reg = [0u8];
        loop {
            serial.read(LSR, &mut reg);
            if reg[0] & LSR_DATA_READY == 0 {
                return;
            }
            serial.read(RBR, &mut reg);
            into.push(reg[0]);
        }
    }

    /// Runs the event loop and the guest until `expected.len()` bytes arrived.
    fn receive(&mut self, expected: usize) -> Vec<u8> {
        let mut received = Vec::new();
        self.guest_drains_fifo(&mut received);
        while received.len() < expected {
            let events = self.manager.run_with_timeout(WAIT_MS).unwrap();
            assert!(events > 0, "input stalled after {} bytes", received.len());
            self.guest_drains_fifo(&mut received);
        }
        received
    }

    fn input(&self) -> std::sync::MutexGuard<'_, Harness> {
        lock(&self.harness)
    }
}

fn sample(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 253) as u8).collect()
}

#[test]
fn pipe_more_than_buffer_while_guest_not_reading_pauses_stdin_then_all_arrives() {
    let (reader, mut writer) = io::pipe().unwrap();
    let input = sample(PENDING_CAPACITY * 2 + 123);
    let to_write = input.clone();
    // The writer blocks once the pipe is full: that is the backpressure.
    let writer_thread = thread::spawn(move || {
        writer.write_all(&to_write).unwrap();
        // Dropping the writer is end of file, with bytes still pending in cabin.
    });
    let mut setup = setup(reader.as_raw_fd());

    // The guest reads nothing yet: cabin fills its buffer, then stops reading.
    while setup.input().0.reading_stdin() {
        assert!(setup.manager.run_with_timeout(WAIT_MS).unwrap() > 0);
    }
    assert_eq!(setup.input().0.pending_len(), PENDING_CAPACITY);
    let received = setup.receive(input.len());

    assert_eq!(received.len(), input.len());
    assert!(received == input, "input arrived altered");
    writer_thread.join().unwrap();
}

#[test]
fn pipe_closed_right_after_writing_delivers_every_byte() {
    let (reader, mut writer) = io::pipe().unwrap();
    let input = sample(8192);
    writer.write_all(&input).unwrap();
    drop(writer);
    let mut setup = setup(reader.as_raw_fd());

    let received = setup.receive(input.len());

    assert!(received == input, "input arrived altered");
}

#[test]
fn regular_file_as_stdin_read_as_the_guest_takes_it() {
    let dir = std::env::temp_dir().join(format!("cabin-console-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("stdin");
    let input = sample(PENDING_CAPACITY + 5000);
    std::fs::write(&path, &input).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let mut setup = setup(file.as_raw_fd());

    let received = setup.receive(input.len());

    assert!(received == input, "input arrived altered");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dev_null_as_stdin_gives_no_input_and_no_events() {
    let null = std::fs::File::open("/dev/null").unwrap();
    let mut setup = setup(null.as_raw_fd());

    let events = setup.manager.run_with_timeout(0).unwrap();

    assert_eq!(events, 0);
    assert_eq!(setup.input().0.pending_len(), 0);
    assert!(!setup.input().0.reading_stdin());
}

#[test]
fn input_before_the_guest_listens_waits_until_it_enables_rx_interrupts() {
    let (reader, mut writer) = io::pipe().unwrap();
    let mut setup = setup(reader.as_raw_fd());
    lock(&setup.serial).write(IER, &[0]);
    writer.write_all(b"early").unwrap();

    assert!(setup.manager.run_with_timeout(WAIT_MS).unwrap() > 0);
    let mut nothing = Vec::new();
    setup.guest_drains_fifo(&mut nothing);
    assert!(nothing.is_empty());
    assert_eq!(setup.input().0.pending_len(), 5);
    lock(&setup.serial).write(IER, &[IER_RX_DATA]);
    let received = setup.receive(5);

    assert_eq!(received, b"early");
}

#[test]
fn input_refused_by_loopback_serial_waits_until_room_signalled() {
    let (reader, mut writer) = io::pipe().unwrap();
    let mut setup = setup(reader.as_raw_fd());
    const MCR_LOOPBACK: u8 = 0x10;
    lock(&setup.serial).write(MCR, &[MCR_LOOPBACK]);
    writer.write_all(b"kept").unwrap();

    assert!(setup.manager.run_with_timeout(WAIT_MS).unwrap() > 0);
    assert_eq!(setup.input().0.pending_len(), 4);
    lock(&setup.serial).write(MCR, &[MCR_OUT2]);
    // The guest's next read of the empty FIFO signals room.
    let mut ignored = [0u8];
    lock(&setup.serial).read(RBR, &mut ignored);
    let received = setup.receive(4);

    assert_eq!(received, b"kept");
}
