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
pub mod virtio;
