//! virtio-console (virtio 1.2, section 5.3): one console port, no multiport.
//!
//! The guest's `hvc0` talks to the host through two virtqueues:
//! - queue 0, the receiveq, carries host input (stdin) to the guest in buffers the
//!   driver posts empty and the device fills (device-writable descriptors);
//! - queue 1, the transmitq, carries guest output to the host in buffers the driver
//!   fills and the device only reads (device-readable descriptors).
//!
//! Without VIRTIO_CONSOLE_F_MULTIPORT there is no control queue pair and no port
//! protocol. The device offers VIRTIO_CONSOLE_F_SIZE with a fixed terminal size in
//! its configuration space so the guest's tty has a sane window size.
//!
//! Host input arrives with [`Console::enqueue_input`] and waits in a bounded buffer
//! until the driver posts receive buffers; what does not fit stays with the caller,
//! which the device tells through an eventfd when it has room again. Guest output
//! goes to a host writer.

mod device;
#[cfg(test)]
mod tests;

pub use device::{Console, ConsoleState};

use std::io;

use thiserror::Error;
use vm_memory::GuestAddress;

/// Index of the receiveq (host to guest).
pub const RX_QUEUE: usize = 0;
/// Index of the transmitq (guest to host).
pub const TX_QUEUE: usize = 1;
/// Number of queues of a single-port console.
pub const NUM_QUEUES: usize = 2;
/// Maximum size of each queue.
pub const QUEUE_MAX_SIZE: u16 = 256;

/// VIRTIO_CONSOLE_F_SIZE: `cols` and `rows` in the configuration space are valid.
pub const VIRTIO_CONSOLE_F_SIZE: u64 = 1 << 0;

/// Terminal width announced in the configuration space.
pub const CONSOLE_COLS: u16 = 80;
/// Terminal height announced in the configuration space.
pub const CONSOLE_ROWS: u16 = 25;
/// Size of `struct virtio_console_config`: `cols: le16`, `rows: le16`,
/// `max_nr_ports: le32` (only meaningful with MULTIPORT), `emerg_wr: le32` (only with
/// EMERG_WRITE). The two last fields read as 0.
pub const CONFIG_SPACE_SIZE: usize = 12;

/// Most host input bytes the device holds for the guest. Beyond this
/// [`Console::enqueue_input`] takes nothing: the caller keeps the rest (cabin's VMM
/// holds a larger buffer and stops reading stdin when that is full).
pub const INPUT_BUFFER_CAPACITY: usize = 4 * 1024;
/// Most bytes taken from one transmit chain; the rest of the chain is dropped. The
/// Linux driver sends at most a few pages per chain, so only a hostile or broken
/// guest reaches this.
pub const MAX_TX_CHAIN_BYTES: usize = 64 * 1024;

/// Why the console could not complete one step of queue processing. The device
/// logs these (the guest or the host writer caused them) and carries on.
#[derive(Debug, Error)]
pub enum ConsoleError {
    /// A descriptor points at guest memory that does not exist (or only partly).
    #[error("Cannot access {len} bytes of guest memory at {addr:#x}")]
    GuestMemory {
        /// Guest-physical address of the buffer.
        addr: u64,
        /// Length of the access.
        len: usize,
        /// vm-memory's reason.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// Writing guest output to the host writer failed.
    #[error("Cannot write console output to the host")]
    Output(#[source] io::Error),
    /// Returning a chain to the used ring failed.
    #[error("Cannot return descriptor chain {head} to queue {queue}")]
    AddUsed {
        /// Queue index.
        queue: usize,
        /// Head index of the chain.
        head: u16,
        /// virtio-queue's reason.
        #[source]
        source: virtio_queue::Error,
    },
    /// Reading the driver's notification suppression state failed.
    #[error("Cannot check whether queue {queue} needs a notification")]
    NeedsNotification {
        /// Queue index.
        queue: usize,
        /// virtio-queue's reason.
        #[source]
        source: virtio_queue::Error,
    },
    /// Signalling the interrupt failed.
    #[error("Cannot signal the console interrupt")]
    Irq(#[source] io::Error),
}

impl ConsoleError {
    /// Builds [`ConsoleError::GuestMemory`].
    fn guest_memory(addr: GuestAddress, len: usize, source: vm_memory::GuestMemoryError) -> Self {
        ConsoleError::GuestMemory {
            addr: addr.0,
            len,
            source,
        }
    }
}

/// Displays an error followed by its sources (`outer: inner: ...`), so one log line
/// carries the whole chain.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}
