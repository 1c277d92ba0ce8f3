//! Unix-socket helpers: binding the device's listener, a connect that never
//! blocks, the `CONNECT` line.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use super::Error;

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

/// Binds and listens on `path` (nonblocking), replacing a stale socket nobody
/// listens on; refuses a live socket or anything else at the path.
pub(crate) fn bind_listener(path: &Path) -> Result<UnixListener, Error> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(Error::PathTooLong {
            path: path.to_path_buf(),
            len,
            max: MAX_SOCKET_PATH,
        });
    }
    let listen_err = |call, source: io::Error| match source.kind() {
        io::ErrorKind::PermissionDenied => Error::PermissionDenied {
            path: path.to_path_buf(),
            call,
        },
        _ => Error::Listen {
            path: path.to_path_buf(),
            call,
            source,
        },
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(Error::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Ok(_) => match connect_nonblocking(path) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(|e| listen_err("unlink", e))?;
            }
            Ok(_) => {
                return Err(Error::InUse {
                    path: path.to_path_buf(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(Error::InUse {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => return Err(listen_err("connect", e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(listen_err("stat", e)),
    }
    let parent_missing = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .is_some_and(|p| !p.is_dir());
    if parent_missing {
        return Err(Error::NoDirectory {
            path: path.to_path_buf(),
        });
    }
    let listener = UnixListener::bind(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::NoDirectory {
            path: path.to_path_buf(),
        },
        _ => listen_err("bind", e),
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| listen_err("ioctl(FIONBIO)", e))?;
    Ok(listener)
}

/// The port of a `CONNECT <port>` line (newline removed): ASCII decimal u32.
pub(crate) fn parse_connect(line: &[u8]) -> Option<u32> {
    let digits = line.strip_prefix(b"CONNECT ")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn parse_connect_decimal_u32_only() {
        assert_eq!(parse_connect(b"CONNECT 0"), Some(0));
        assert_eq!(parse_connect(b"CONNECT 4294967295"), Some(u32::MAX));
        for bad in [
            &b"CONNECT 4294967296"[..],
            b"CONNECT ",
            b"CONNECT +5",
            b"CONNECT -5",
            b"CONNECT 5 ",
            b"connect 5",
            b"CONNECT\t5",
            b"CONNECT 5\r",
            b"",
        ] {
            assert_eq!(parse_connect(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn connect_nonblocking_refusals() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let missing = dir.as_path().join("none");

        let err = connect_nonblocking(&missing).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let long = dir.as_path().join("x".repeat(MAX_SOCKET_PATH));
        let err = connect_nonblocking(&long).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn connect_nonblocking_to_listener_is_nonblocking() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = dir.as_path().join("l");
        let listener = UnixListener::bind(&path).unwrap();

        let stream = connect_nonblocking(&path).unwrap();

        let mut buf = [0u8; 1];
        let err = (&stream).read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(listener.accept().is_ok());
    }
}
