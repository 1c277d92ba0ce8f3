//! Device models for cabin.
//!
//! This crate knows nothing about the VMM or KVM. Devices see register offsets
//! and byte slices through [`bus::BusDevice`], and raise interrupts or request a
//! reset by writing to `EventFd`s that the VMM wires up (as irqfds, or into its
//! event loop).
//!
//! Everything a guest writes or reads is hostile input: no access, at any
//! offset or width, may panic. Unexpected accesses are logged, rate-limited.

#[doc(hidden)]
pub mod ratelimit;

pub mod bus;
pub mod legacy;
pub mod rate_limiter;
pub mod snapshot;
pub mod virtio;

/// Guest memory as every device and the VMM see it: mmapped regions whose pages
/// written through vm-memory (by a device, or by the VMM at boot) are marked in a
/// bitmap. KVM logs the guest's own writes; this bitmap logs the host's, and a
/// diff snapshot needs both.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<vm_memory::bitmap::AtomicBitmap>;
/// One region of [`GuestMemoryMmap`].
pub type GuestRegionMmap = vm_memory::GuestRegionMmap<vm_memory::bitmap::AtomicBitmap>;
