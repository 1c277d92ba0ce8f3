//! The listening socket: AF_VSOCK in a guest, a Unix socket in host tests. Accepted
//! connections are plain `File`s: the agent only reads, writes and shuts them down.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Connections the kernel queues before `accept`.
const BACKLOG: libc::c_int = 128;

/// Why the agent cannot listen.
#[derive(Debug, Error)]
pub enum ListenError {
    /// The kernel has no AF_VSOCK (or no vsock transport).
    #[error("this kernel has no AF_VSOCK sockets (it needs CONFIG_VSOCKETS and CONFIG_VIRTIO_VSOCKETS, and the VM a vsock device)")]
    NoVsock(#[source] io::Error),
    /// socket(2) failed otherwise.
    #[error("cannot create an AF_VSOCK socket")]
    Socket(#[source] io::Error),
    /// The port is taken or cannot be bound.
    #[error("cannot listen on vsock port {port}")]
    Bind {
        /// The port.
        port: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The Unix socket cannot be bound.
    #[error("cannot listen on {path}")]
    Unix {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A new AF_VSOCK stream socket (close-on-exec).
pub(super) fn vsock_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the descriptor it returns is checked and
    // then owned by exactly one OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The vsock address of `port` at context id `cid`.
pub(super) fn vsock_addr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain old data; all-zero is a valid value that the
    // fields below complete.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_port = port;
    addr.svm_cid = cid;
    addr
}

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    /// AF_VSOCK, SOCK_STREAM.
    Vsock(OwnedFd),
    /// A Unix stream socket (host tests).
    Unix(UnixListener),
}

impl Listener {
    /// Listens on AF_VSOCK `port` for any CID.
    pub fn vsock(port: u32) -> Result<Listener, ListenError> {
        let fd = vsock_socket().map_err(|e| match e.raw_os_error() {
            Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::ENODEV) => {
                ListenError::NoVsock(e)
            }
            _ => ListenError::Socket(e),
        })?;
        let addr = vsock_addr(libc::VMADDR_CID_ANY, port);
        let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
        // SAFETY: `addr` is a live, initialized sockaddr_vm and `len` is its exact
        // size, so bind reads only within it.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_vm).cast(),
                len,
            )
        };
        // SAFETY: listen(2) takes no pointers; `fd` is an open socket owned here.
        if bound < 0 || unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) } < 0 {
            let source = io::Error::last_os_error();
            return Err(match source.raw_os_error() {
                Some(libc::ENODEV | libc::EADDRNOTAVAIL) => ListenError::NoVsock(source),
                _ => ListenError::Bind { port, source },
            });
        }
        Ok(Listener::Vsock(fd))
    }

    /// Listens on the Unix socket `path`.
    pub fn unix(path: &Path) -> Result<Listener, ListenError> {
        UnixListener::bind(path)
            .map(Listener::Unix)
            .map_err(|source| ListenError::Unix {
                path: path.to_owned(),
                source,
            })
    }

    /// Waits for the next connection.
    pub fn accept(&self) -> io::Result<File> {
        match self {
            Listener::Vsock(fd) => {
                // SAFETY: null address pointers ask accept4 for no peer address; `fd`
                // is a listening socket owned by `self`.
                let conn = unsafe {
                    libc::accept4(
                        fd.as_raw_fd(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_CLOEXEC,
                    )
                };
                if conn < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: `conn` was just returned by accept4 and nothing else owns it.
                Ok(File::from(unsafe { OwnedFd::from_raw_fd(conn) }))
            }
            Listener::Unix(listener) => {
                let (stream, _) = listener.accept()?;
                Ok(File::from(OwnedFd::from(stream)))
            }
        }
    }
}
