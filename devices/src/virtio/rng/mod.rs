//! virtio-rng, the entropy device (virtio 1.2, section 5.4).
//!
//! One queue: the driver posts device-writable buffers, the device fills them with
//! random bytes from the host's `getrandom(2)` and returns them. At most
//! [`MAX_REQUEST_BYTES`] are written per chain, so one request cannot hold the
//! event loop; device-readable descriptors get nothing.
//!
//! Rate limiting works like virtio-blk's: each chain costs an op token and the
//! bytes it will receive in bandwidth tokens; a refused chain stays on the queue
//! until the limiter's timerfd ([`RATE_LIMITER_EVENT_TOKEN`] in `event_fds`) fires.
//!
//! [`request`] walks a chain (pure, no fds); [`device`] holds the state and the
//! [`crate::virtio::VirtioDevice`] implementation; [`metrics`] the counters.

pub mod device;
pub mod metrics;
pub mod request;

pub use device::{Rng, RngState};
pub use metrics::RngMetrics;
pub use request::{RequestError, Segment};

/// Size of the request queue (the device has exactly one).
pub const QUEUE_SIZE: u16 = 256;
/// Most descriptors one chain may have.
pub const MAX_CHAIN_DESCRIPTORS: usize = QUEUE_SIZE as usize;
/// Most random bytes written per chain: bounds the work (and the host entropy)
/// one request can take. Linux asks for at most a page or so at a time.
pub const MAX_REQUEST_BYTES: u32 = 64 << 10;
/// The token of the rate limiter's timerfd in
/// [`crate::virtio::VirtioDevice::event_fds`].
pub const RATE_LIMITER_EVENT_TOKEN: u32 = 0;
