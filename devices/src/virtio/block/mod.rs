//! virtio-blk: a disk backed by a host file or block device (virtio 1.2, section 5.2).
//!
//! [`request`] turns a descriptor chain into a validated [`Request`] without touching
//! any file; `disk` owns the backing file and executes requests against it;
//! [`device`] owns the queue, the interrupt and the rate limiter, and completes
//! requests on the used ring; [`metrics`] counts what it did.
//!
//! Rate limiting: every chain costs one op token, reads and writes also their data
//! length in bandwidth tokens. A chain the limiter refuses is put back on the queue
//! (nothing is executed or completed) and the device stops until the limiter's
//! timerfd, which [`device::Block`] lists in `event_fds` with
//! [`RATE_LIMITER_EVENT_TOKEN`], fires; then it resumes where it stopped.

pub mod device;
mod disk;
pub mod metrics;
pub mod request;
#[cfg(test)]
mod test_env;

use std::io;
use std::path::PathBuf;

use thiserror::Error;
use virtio_bindings::virtio_blk;

pub use device::{Block, BlockConfig, BlockState, CacheType};
pub use metrics::BlockMetrics;
pub use request::{Rejected, Request, RequestError, RequestKind};

/// Bytes per virtio-blk sector; `capacity` and request sectors count in these units,
/// whatever `blk_size` says.
pub const SECTOR_SIZE: u64 = 512;
/// log2 of [`SECTOR_SIZE`].
pub const SECTOR_SHIFT: u32 = 9;
/// Length of the GET_ID answer: a string of up to this many bytes, zero-padded.
pub const VIRTIO_BLK_ID_BYTES: usize = virtio_blk::VIRTIO_BLK_ID_BYTES as usize;
/// Size of the request queue (the device has exactly one).
pub const QUEUE_SIZE: u16 = 256;
/// Most data segments the driver may put in one request (`seg_max`): a full queue's
/// worth of descriptors minus the header and the status descriptor.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Most descriptors one request chain may have, indirect tables included.
pub const MAX_CHAIN_DESCRIPTORS: usize = QUEUE_SIZE as usize;
/// Most data bytes one read or write request may carry. Linux issues at most 4 MiB
/// per request unless `max_sectors_kb` is raised; this leaves a wide margin while
/// bounding how long one request can hold the event loop.
pub const MAX_REQUEST_BYTES: u32 = 64 << 20;

/// The token of the rate limiter's timerfd in
/// [`crate::virtio::VirtioDevice::event_fds`].
pub const RATE_LIMITER_EVENT_TOKEN: u32 = 0;

/// Request header (`struct virtio_blk_outhdr`): type u32, reserved u32, sector u64.
pub const REQUEST_HEADER_SIZE: u32 = 16;

/// Request completed.
pub const VIRTIO_BLK_S_OK: u8 = virtio_blk::VIRTIO_BLK_S_OK as u8;
/// Request failed (malformed, out of range, or a host I/O error).
pub const VIRTIO_BLK_S_IOERR: u8 = virtio_blk::VIRTIO_BLK_S_IOERR as u8;
/// Request type not supported.
pub const VIRTIO_BLK_S_UNSUPP: u8 = virtio_blk::VIRTIO_BLK_S_UNSUPP as u8;

/// Config space offset of `capacity` (u64, in 512-byte sectors).
pub const CONFIG_CAPACITY_OFFSET: usize = 0;
/// Config space offset of `size_max` (u32; unused, VIRTIO_BLK_F_SIZE_MAX is not offered).
pub const CONFIG_SIZE_MAX_OFFSET: usize = 8;
/// Config space offset of `seg_max` (u32).
pub const CONFIG_SEG_MAX_OFFSET: usize = 12;
/// Config space offset of `geometry` (4 bytes; unused, VIRTIO_BLK_F_GEOMETRY is not offered).
pub const CONFIG_GEOMETRY_OFFSET: usize = 16;
/// Config space offset of `blk_size` (u32).
pub const CONFIG_BLK_SIZE_OFFSET: usize = 20;
/// Length of the config space the device fills in; later fields read as zero.
pub const CONFIG_SPACE_SIZE: usize = 24;

/// Why a block device could not be created.
#[derive(Debug, Error)]
pub enum Error {
    /// The backing file cannot be opened.
    #[error("Cannot open disk image {}", path.display())]
    Open {
        /// The backing file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// fstat on the backing file failed.
    #[error("Cannot stat disk image {}", path.display())]
    Stat {
        /// The backing file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The backing file is neither a regular file nor a block device.
    #[error("Disk image {} is neither a regular file nor a block device", path.display())]
    NotADisk {
        /// The backing file.
        path: PathBuf,
    },
    /// The size of the backing file cannot be determined.
    #[error("Cannot get the size of disk image {}", path.display())]
    Size {
        /// The backing file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The rate limiter's timerfd cannot be created or set up.
    #[error("Cannot create the rate limiter timer for disk image {}", path.display())]
    RateLimiter {
        /// The backing file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The configured disk id does not fit in the GET_ID answer.
    #[error("Disk id {id:?} for {} is {len} bytes, at most {VIRTIO_BLK_ID_BYTES} allowed", path.display())]
    IdTooLong {
        /// The backing file.
        path: PathBuf,
        /// The configured id.
        id: String,
        /// Its length in bytes.
        len: usize,
    },
}
