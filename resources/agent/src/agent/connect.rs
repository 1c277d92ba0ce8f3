//! `cabin-agent connect PORT`: the guest's end of a guest-initiated connection, for
//! scripts and tests. Connects to the host (CID 2) on vsock port PORT, which the
//! VMM hands to the Unix socket listening at `<uds_path>_PORT`, sends its stdin
//! (then shuts its sending side) and copies what comes back to its stdout.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;

use super::listen::{vsock_addr, vsock_socket};
use std::thread;

/// The host's context id.
const HOST_CID: u32 = 2;

/// Connects to the host's `port`; the connection as a `File`.
pub fn connect_host(port: u32) -> io::Result<File> {
    let fd = vsock_socket()?;
    let addr = vsock_addr(HOST_CID, port);
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: `addr` is a live, initialized sockaddr_vm and `len` is its exact size,
    // so connect reads only within it.
    let ret = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_vm).cast(),
            len,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(File::from(fd))
}

/// Copies stdin to the host's `port` and its answer to stdout; Err names the
/// step that failed.
pub fn run(port: u32) -> Result<(), String> {
    let conn = connect_host(port)
        .map_err(|e| format!("cannot connect to the host's vsock port {port}: {e}"))?;
    let mut sending = conn
        .try_clone()
        .map_err(|e| format!("cannot duplicate the connection: {e}"))?;
    let sender = thread::spawn(move || -> io::Result<()> {
        io::copy(&mut io::stdin().lock(), &mut sending)?;
        // SAFETY: shutdown(2) takes no pointers; `sending` is an open socket.
        if unsafe { libc::shutdown(sending.as_raw_fd(), libc::SHUT_WR) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    });
    let mut receiving = conn;
    let mut stdout = io::stdout().lock();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match receiving.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading from the host: {e}")),
        };
        stdout
            .write_all(&buf[..n])
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("writing stdout: {e}"))?;
    }
    // The host closed: what stdin still had to say no longer matters, unless
    // sending failed before.
    if sender.is_finished() {
        match sender.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("sending stdin to the host: {e}")),
            Err(_) => return Err("the stdin thread failed".into()),
        }
    }
    Ok(())
}
