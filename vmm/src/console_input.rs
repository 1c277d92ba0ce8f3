//! Host input for the guest console: stdin feeds the serial port or the virtio
//! console as fast as the guest takes it, and nothing typed or pasted is dropped.
//!
//! Bytes the device cannot take now wait in a bounded [`PendingInput`]. The device
//! signals an eventfd when it has room again (the serial port when the guest has
//! read its receive FIFO empty, the virtio console when the guest posted receive
//! buffers after input was refused); the event loop then offers the next bytes.
//! While the buffer is full, stdin is not watched, so the kernel's pipe or tty
//! buffer holds the rest and the writer blocks: backpressure, not loss. End of
//! file on stdin stops the reading, not the delivery of what is pending.
//!
//! A regular file (or `/dev/null`) as stdin cannot be watched with epoll: it is
//! always readable, so it is read whenever the buffer has room, with the same bound.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use devices::legacy::Serial;
use devices::virtio::console::Console;
use event_manager::{EventOps, Events};
use log::debug;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

/// Most host input bytes held for a guest that is not reading.
pub const PENDING_CAPACITY: usize = 64 * 1024;
/// Most bytes taken from stdin per read.
const READ_CHUNK: usize = 4096;
/// A paused stdin is watched again once this much room is free, so a slow guest
/// does not turn every drained FIFO into a pair of epoll_ctl calls.
const RESUME_ROOM: usize = READ_CHUNK;

/// Host input waiting for the guest, in order, at most `capacity` bytes.
#[derive(Debug)]
pub struct PendingInput {
    bytes: VecDeque<u8>,
    capacity: usize,
}

impl PendingInput {
    /// An empty buffer that holds at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        PendingInput {
            bytes: VecDeque::new(),
            capacity,
        }
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes that can still be pushed.
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.bytes.len())
    }

    /// Appends as many leading bytes of `bytes` as there is room for; returns how many.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let take = self.room().min(bytes.len());
        self.bytes.extend(&bytes[..take]);
        take
    }

    /// Offers the waiting bytes to `take`, oldest first, until it takes fewer than
    /// offered or nothing is left; removes what it took and returns the count.
    /// `take` returns how many leading bytes of its argument it took (more than
    /// offered counts as all).
    pub fn feed(&mut self, mut take: impl FnMut(&[u8]) -> usize) -> usize {
        let mut total = 0;
        while !self.bytes.is_empty() {
            let (front, _) = self.bytes.as_slices();
            let offered = front.len();
            let taken = take(front).min(offered);
            self.bytes.drain(..taken);
            total += taken;
            if taken < offered {
                break;
            }
        }
        total
    }
}

/// The device that receives console input.
#[derive(Debug)]
pub enum ConsoleDevice {
    /// COM1.
    Serial(Arc<Mutex<Serial>>),
    /// virtio console.
    Virtio(Arc<Mutex<Console>>),
}

impl ConsoleDevice {
    /// Offers input to the device; returns how many leading bytes it took.
    fn enqueue(&self, bytes: &[u8]) -> usize {
        match self {
            ConsoleDevice::Serial(serial) => lock(serial).enqueue_input(bytes),
            ConsoleDevice::Virtio(console) => lock(console).enqueue_input(bytes),
        }
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where reading stdin stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stdin {
    /// Not yet looked at (before [`ConsoleInput::watch`]).
    Unwatched,
    /// In the epoll set.
    Watched,
    /// Out of the epoll set while the pending buffer is (nearly) full.
    Paused,
    /// Epoll refuses it (a regular file, `/dev/null`): read whenever there is room.
    Unpollable,
    /// End of file, hang-up or a read error: nothing more comes.
    Closed,
}

/// Console input of a running VM: the device, its room eventfd, the pending bytes
/// and the state of stdin. The event loop calls [`ConsoleInput::watch`] once and
/// hands it every event with [`ConsoleInput::process`].
#[derive(Debug)]
pub struct ConsoleInput {
    device: ConsoleDevice,
    /// Signalled by the device when it can take more input.
    room_evt: EventFd,
    pending: PendingInput,
    stdin_fd: RawFd,
    stdin: Stdin,
}

impl ConsoleInput {
    /// Console input from `stdin_fd` to `device`, which signals `room_evt` when it
    /// can take more.
    pub fn new(device: ConsoleDevice, room_evt: EventFd, stdin_fd: RawFd) -> Self {
        ConsoleInput {
            device,
            room_evt,
            pending: PendingInput::new(PENDING_CAPACITY),
            stdin_fd,
            stdin: Stdin::Unwatched,
        }
    }

    /// Adds the room eventfd and stdin to the event loop; false if the room eventfd
    /// cannot be watched (then input could stall). stdin that cannot be watched is
    /// read on demand (regular files) or ignored (closed).
    pub fn watch(&mut self, ops: &mut EventOps) -> bool {
        let ok = ops.add(Events::new(&self.room_evt, EventSet::IN)).is_ok();
        self.stdin = match ops.add(Events::new_raw(self.stdin_fd, EventSet::IN)) {
            Ok(()) => Stdin::Watched,
            Err(event_manager::Error::Epoll(e)) if e.errno() == libc::EPERM => {
                debug!("stdin cannot be polled (a regular file?): read as the guest takes it");
                Stdin::Unpollable
            }
            Err(e) => {
                debug!("stdin cannot be watched ({e:?}); guest console input disabled");
                Stdin::Closed
            }
        };
        self.pump(ops);
        ok
    }

    /// Handles an event on one of this input's descriptors; false if `fd` is not one.
    pub fn process(&mut self, fd: RawFd, events: EventSet, ops: &mut EventOps) -> bool {
        if fd == self.room_evt.as_raw_fd() {
            // Reading resets the counter; several signals coalesce into one pass.
            let _ = self.room_evt.read();
            self.pump(ops);
            return true;
        }
        if fd != self.stdin_fd || self.stdin != Stdin::Watched {
            return false;
        }
        if events.contains(EventSet::IN) {
            self.read_stdin(ops);
            self.pump(ops);
        } else {
            // Hang-up or error with nothing left to read.
            self.close_stdin(ops);
        }
        true
    }

    /// Whether stdin is in the event loop's epoll set now.
    pub fn reading_stdin(&self) -> bool {
        self.stdin == Stdin::Watched
    }

    /// Bytes waiting for the guest.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Offers pending input to the device, tops the buffer up from an unpollable
    /// stdin, and watches stdin or not depending on the room left.
    fn pump(&mut self, ops: &mut EventOps) {
        self.feed_device();
        if self.stdin == Stdin::Unpollable {
            while self.pending.room() > 0 && self.stdin == Stdin::Unpollable {
                if self.read_stdin(ops) == 0 {
                    break;
                }
            }
            self.feed_device();
        }
        match self.stdin {
            Stdin::Watched if self.pending.room() == 0 => {
                let _ = ops.remove(Events::new_raw(self.stdin_fd, EventSet::IN));
                self.stdin = Stdin::Paused;
            }
            Stdin::Paused if self.pending.room() >= RESUME_ROOM => {
                self.stdin = match ops.add(Events::new_raw(self.stdin_fd, EventSet::IN)) {
                    Ok(()) => Stdin::Watched,
                    Err(e) => {
                        debug!("stdin cannot be watched again ({e:?}); input ends here");
                        Stdin::Closed
                    }
                };
            }
            _ => {}
        }
    }

    fn feed_device(&mut self) {
        let device = &self.device;
        self.pending.feed(|bytes| device.enqueue(bytes));
    }

    /// Reads one chunk of stdin into the pending buffer (no more than it has room
    /// for); returns the bytes read. End of file and errors close stdin.
    fn read_stdin(&mut self, ops: &mut EventOps) -> usize {
        let mut buf = [0u8; READ_CHUNK];
        let want = self.pending.room().min(buf.len());
        if want == 0 {
            return 0;
        }
        // SAFETY: reads at most `want` <= buf.len() bytes into `buf`, which this
        // frame owns; the descriptor is only read, never closed here.
        let n = unsafe { libc::read(self.stdin_fd, buf.as_mut_ptr().cast(), want) };
        match usize::try_from(n) {
            Ok(0) => {
                debug!(
                    "end of stdin; {} input bytes still pending",
                    self.pending.len()
                );
                self.close_stdin(ops);
                0
            }
            Ok(n) => self.pending.push(&buf[..n.min(want)]),
            Err(_) => {
                let err = io::Error::last_os_error();
                if !matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) {
                    debug!("stdin: {err}; guest console input ends here");
                    self.close_stdin(ops);
                }
                0
            }
        }
    }

    fn close_stdin(&mut self, ops: &mut EventOps) {
        if self.stdin == Stdin::Watched {
            let _ = ops.remove(Events::new_raw(self.stdin_fd, EventSet::IN));
        }
        self.stdin = Stdin::Closed;
    }
}

#[cfg(test)]
#[path = "console_input_tests.rs"]
mod tests;
