//! Unix-socket helpers std lacks: a connect that never blocks.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Longest path a `sockaddr_un` holds (its NUL terminator excluded).
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// Connects a nonblocking stream socket to the Unix socket at `path`. Never waits:
/// a listener whose backlog is full gives `WouldBlock`, none gives
/// `ConnectionRefused` or `NotFound`.
pub(crate) fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() > MAX_SOCKET_PATH || bytes.contains(&0) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: `sockaddr_un` is plain old data for which all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    // SAFETY: socket() takes no pointers; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket() and nothing else owns it; the
    // OwnedFd closes it on every path below.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // `addr` is 110 bytes, well within socklen_t.
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a valid, NUL-terminated (zeroed past the path, which is at
    // most 107 bytes) `sockaddr_un` that lives across the call, and `len` is its
    // size; connect only reads it.
    let ret = unsafe { libc::connect(fd, std::ptr::addr_of!(addr).cast::<libc::sockaddr>(), len) };
    if ret < 0 {
        let e = io::Error::last_os_error();
        // A Unix socket never connects asynchronously; EINPROGRESS is not expected.
        if e.raw_os_error() == Some(libc::EAGAIN) {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        return Err(e);
    }
    Ok(UnixStream::from(owned))
}

/// Sets O_NONBLOCK on `fd` (the close timer), so a stale readiness never blocks
/// the event loop.
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL only reads the status flags of `fd`, an open descriptor the
    // caller owns; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFL changes only the status flags of the same owned `fd`; no
    // memory is passed.
    let ret = unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
