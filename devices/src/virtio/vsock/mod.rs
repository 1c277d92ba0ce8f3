//! virtio-vsock (virtio 1.2, section 5.10) with a hybrid Unix-socket backend: guest
//! AF_VSOCK stream sockets reach host processes through Unix stream sockets.
//!
//! Three queues: the rxq ([`RX_QUEUE`]) carries packets to the guest in buffers the
//! driver posts empty, the txq ([`TX_QUEUE`]) packets from the guest, the eventq
//! ([`EVENT_QUEUE`]) only the transport reset sent after a snapshot restore. Every
//! packet starts with the 44-byte header of [`packet`]; only stream sockets are
//! offered (no SEQPACKET).
//!
//! The host side:
//! - Host-initiated: the device listens on `uds_path`. A host process connects and
//!   writes `CONNECT <port>\n`; the device sends the guest a REQUEST from a fresh
//!   host port and, on the guest's RESPONSE, answers `OK <host port>\n` on the
//!   stream, after which bytes flow both ways. A RST closes the stream.
//! - Guest-initiated: a REQUEST to the host (CID [`HOST_CID`]) on port `P` connects
//!   to the Unix socket `<uds_path>_P`: RESPONSE if it accepts, RST otherwise.
//!
//! Flow control follows the spec's credit scheme. Each connection advertises
//! [`CONN_BUF_ALLOC`] bytes of buffer to the guest: guest data the host stream does
//! not take at once waits there, and a guest that sends past its credit has the
//! connection reset. In the other direction the device reads a host stream only
//! while the guest has credit for it and the rxq has buffers.
//!
//! The VMM watches the one fd [`VirtioDevice::event_fds`] returns, level-triggered:
//! an epoll set owned by the device, holding the listener, a timer and every stream
//! with exactly the interest the device has in it right now (see [`muxer`]). A stream
//! whose data the guest cannot take leaves the set's read interest, so the event
//! loop never spins on it; it stays watched for a full hang-up of its host peer
//! (EPOLLHUP, reported even with interest 0), which resets the connection (a RST to
//! the guest) and closes the stream, so the guest learns that a host process that
//! closed or died is gone even when it was not reading.
//!
//! Limits, so that neither a guest nor host processes can make the device grow
//! without bound: [`MAX_CONNECTIONS`] connections, [`MAX_PENDING_STREAMS`] host
//! streams still sending their `CONNECT` line, [`MAX_CONTROL_BACKLOG`] control
//! packets before the txq waits, [`CONN_BUF_ALLOC`] buffered bytes per connection.
//! A connection that is closing, a `CONNECT` line or a host-initiated REQUEST that
//! does not finish within [`CLOSE_TIMEOUT_MS`] is dropped (a RST to the guest),
//! except a closing connection whose guest data still waits for its host stream:
//! that one lasts while the host reads, however slowly, and ends when it hangs up.
//!
//! System calls on the VMM thread once the device exists (for its seccomp filter):
//! `epoll_wait` and `epoll_ctl` (its two epoll sets), `accept4` and `ioctl(FIONBIO)`
//! (host connections), `recvfrom` and `sendto(MSG_NOSIGNAL)` (std's socket read and
//! write), `shutdown(SHUT_WR)`, `close`, `socket(AF_UNIX, SOCK_STREAM |
//! SOCK_NONBLOCK | SOCK_CLOEXEC)` and `connect` (guest-initiated connections),
//! `read` and `timerfd_settime` (the close timer), `write` (the irqfd). Dropping the
//! device: `statx` (or `newfstatat`) and `unlink`. Creating it: `statx`, `socket`,
//! `connect` and `unlink` (a stale socket), `bind`, `listen`, `ioctl(FIONBIO)`,
//! `epoll_create1`, `timerfd_create`, `fcntl`.
//!
//! [`packet`] parses and builds packets over descriptor chains (no fds);
//! [`connection`] is one connection's state and credit; [`muxer`] the listener,
//! streams and ports; [`device`] the [`VirtioDevice`] implementation; [`metrics`]
//! the counters.
//!
//! [`VirtioDevice`]: crate::virtio::VirtioDevice
//! [`VirtioDevice::event_fds`]: crate::virtio::VirtioDevice::event_fds

pub mod connection;
pub mod device;
mod guest;
pub mod metrics;
pub mod muxer;
pub mod packet;
mod unix;

#[cfg(test)]
mod device_tests;
#[cfg(test)]
mod hangup_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod test_utils;

use std::io;
use std::path::PathBuf;

use thiserror::Error;

pub use device::{Vsock, VsockState};
pub use metrics::VsockMetrics;
pub use packet::{Header, PacketError};

/// The host's context id: what the guest addresses to reach the host.
pub const HOST_CID: u64 = 2;
/// Smallest guest CID (0 and 1 are reserved, 2 is the host).
pub const MIN_GUEST_CID: u64 = 3;
/// Largest guest CID: Linux keeps CIDs in 32 bits and `u32::MAX` means any.
pub const MAX_GUEST_CID: u64 = u32::MAX as u64 - 1;

/// Index of the rxq (host to guest).
pub const RX_QUEUE: usize = 0;
/// Index of the txq (guest to host).
pub const TX_QUEUE: usize = 1;
/// Index of the eventq.
pub const EVENT_QUEUE: usize = 2;
/// Number of queues.
pub const NUM_QUEUES: usize = 3;
/// Maximum size of each queue.
pub const QUEUE_MAX_SIZE: u16 = 256;
/// Most descriptors one chain may have.
pub const MAX_CHAIN_DESCRIPTORS: usize = QUEUE_MAX_SIZE as usize;

/// Most payload bytes in one packet (either direction).
pub const MAX_PAYLOAD: u32 = 64 << 10;
/// Buffer the device advertises per connection (`buf_alloc`): guest data the host
/// stream has not taken yet, at most this much.
pub const CONN_BUF_ALLOC: u32 = 256 << 10;
/// When the guest's idea of the free buffer (from the last `fwd_cnt` it got) falls
/// below this, the device sends a CREDIT_UPDATE as soon as it has freed space.
pub const CREDIT_UPDATE_THRESHOLD: u32 = 64 << 10;
/// Most connections at once; REQUESTs beyond are answered with RST.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most host streams still sending their `CONNECT` line; more are closed at once.
pub const MAX_PENDING_STREAMS: usize = 64;
/// Longest `CONNECT <port>\n` line accepted, newline included.
pub const MAX_CONNECT_LINE: usize = 32;
/// Most control packets (RST, RESPONSE, credit, ...) waiting for rxq buffers. When
/// full, the device stops taking packets from the txq until the guest posts rx
/// buffers: a guest cannot make it queue replies without bound.
pub const MAX_CONTROL_BACKLOG: usize = 512;
/// How long a closing connection waits for the guest's RST (or for its buffered data
/// to reach the host stream) before the device resets it: no connection leaks.
pub const CLOSE_TIMEOUT_MS: u64 = 2000;
/// Most packets read from one host stream per event before the device returns to the
/// event loop (it stays readable, so the loop comes back): fairness.
pub const PACKETS_PER_STREAM_PASS: usize = 16;
/// The token of the device's epoll fd in [`crate::virtio::VirtioDevice::event_fds`].
pub const EPOLL_EVENT_TOKEN: u32 = 0;
/// Config space: `guest_cid` (le64), read-only.
pub const CONFIG_SPACE_SIZE: usize = 8;

/// How to build a vsock device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's CID, in [`MIN_GUEST_CID`]..=[`MAX_GUEST_CID`].
    pub guest_cid: u64,
    /// The Unix socket host processes connect to; guest-initiated connections to
    /// port `P` go to `<uds_path>_P`.
    pub uds_path: PathBuf,
}

/// Why a vsock device could not be created.
#[derive(Debug, Error)]
pub enum Error {
    /// The guest CID is reserved or too large.
    #[error(
        "Vsock guest CID {cid} is invalid: choose a value from {MIN_GUEST_CID} to {MAX_GUEST_CID} \
         (0-2 are reserved, 2 is the host)"
    )]
    InvalidCid {
        /// The configured CID.
        cid: u64,
    },
    /// The path does not fit in a Unix socket address.
    #[error(
        "Vsock uds_path {} is too long for a Unix socket ({len} bytes, at most {max}); choose \
         a shorter path",
        path.display()
    )]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The most a socket address holds (less room for the `_<port>` suffix).
        max: usize,
    },
    /// The directory of the path does not exist.
    #[error("Vsock uds_path {}: its directory does not exist; create it first", path.display())]
    NoDirectory {
        /// The path.
        path: PathBuf,
    },
    /// Another process listens on the path.
    #[error(
        "Vsock uds_path {} is in use by another process; choose another uds_path",
        path.display()
    )]
    InUse {
        /// The path.
        path: PathBuf,
    },
    /// Something that is not a socket is at the path.
    #[error(
        "Vsock uds_path {} exists and is not a socket; remove it or choose another uds_path",
        path.display()
    )]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// cabin may not create (or replace) the socket there.
    #[error(
        "Vsock uds_path {}: permission denied ({call}); choose a path in a directory cabin \
         may write",
        path.display()
    )]
    PermissionDenied {
        /// The path.
        path: PathBuf,
        /// The refused call.
        call: &'static str,
    },
    /// A system call failed while setting up the listener.
    #[error("Cannot listen on vsock uds_path {}: {call} failed", path.display())]
    Listen {
        /// The path.
        path: PathBuf,
        /// The failed call.
        call: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}
