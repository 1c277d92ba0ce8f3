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

/// Sets O_NONBLOCK on `fd` (a timerfd, whose crate creates it blocking), so a
/// stale readiness never blocks the event loop.
pub(crate) fn set_nonblocking(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // SAFETY: F_GETFL only reads the status flags of `fd`, an open descriptor the
    // caller owns; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: F_SETFL changes only the status flags of the same owned `fd`; no
    // memory is passed.
    let ret = unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
