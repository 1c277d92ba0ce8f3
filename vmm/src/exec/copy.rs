//! `cabin cp`: one regular file between the host and the guest.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cabin_agent::{read_frame, write_frame, Frame, DATA_CHUNK};

use super::{open, read_error, CpArgs, ExecError, EXIT_COPY_FAILED, EXIT_FAILURE};

/// The connection ending means the copy, not a command, broke off.
fn copy_closed(e: ExecError) -> ExecError {
    match e {
        ExecError::Closed => ExecError::CopyClosed,
        e => e,
    }
}

/// The prefix that marks a guest path.
const GUEST_PREFIX: &[u8] = b"guest:";
/// How long to wait for the agent's reason after it stopped taking data.
const REASON_WAIT: Duration = Duration::from_secs(5);

/// The direction of a copy.
#[derive(Debug, PartialEq, Eq)]
enum Copy {
    /// Host file to guest path.
    In { host: PathBuf, guest: Vec<u8> },
    /// Guest path to host file.
    Out { guest: Vec<u8>, host: PathBuf },
}

/// The guest path in `arg` (`guest:/abs/path`), if it is one.
fn guest_path(arg: &OsStr) -> Option<&[u8]> {
    arg.as_bytes().strip_prefix(GUEST_PREFIX)
}

fn plan(src: &OsStr, dst: &OsStr) -> Result<Copy, ExecError> {
    let copy = match (guest_path(src), guest_path(dst)) {
        (None, Some(guest)) => {
            let host = PathBuf::from(src);
            let mut guest = guest.to_vec();
            if guest.ends_with(b"/") {
                let name = host.file_name().ok_or_else(|| {
                    ExecError::Usage(format!("{} has no file name", host.display()))
                })?;
                guest.extend_from_slice(name.as_bytes());
            }
            Copy::In { host, guest }
        }
        (Some(guest), None) => {
            let mut host = PathBuf::from(dst);
            if dst.as_bytes().ends_with(b"/") || host.is_dir() {
                let name = Path::new(OsStr::from_bytes(guest))
                    .file_name()
                    .ok_or_else(|| {
                        ExecError::Usage(format!(
                            "guest:{} has no file name",
                            String::from_utf8_lossy(guest)
                        ))
                    })?;
                host.push(name);
            }
            Copy::Out {
                guest: guest.to_vec(),
                host,
            }
        }
        (Some(_), Some(_)) => {
            return Err(ExecError::Usage(
                "both SRC and DST are guest paths: one must be a host path".into(),
            ))
        }
        (None, None) => {
            return Err(ExecError::Usage(
                "neither SRC nor DST is a guest path: write the guest one as guest:/ABSOLUTE/PATH"
                    .into(),
            ))
        }
    };
    let guest = match &copy {
        Copy::In { guest, .. } | Copy::Out { guest, .. } => guest,
    };
    if guest.first() != Some(&b'/') {
        return Err(ExecError::Usage(format!(
            "guest:{} is not an absolute path (write guest:/ABSOLUTE/PATH)",
            String::from_utf8_lossy(guest)
        )));
    }
    Ok(copy)
}

/// Runs `cabin cp`: 0 when copied; [`EXIT_COPY_FAILED`] when a file could not be
/// read or written on either side, or the arguments are wrong; [`EXIT_FAILURE`] when
/// the agent could not be reached or the connection broke. One line on stderr.
pub fn run_cp(args: &CpArgs) -> i32 {
    let result = plan(&args.src, &args.dst).and_then(|copy| match copy {
        Copy::In { host, guest } => copy_in(args, &host, guest),
        Copy::Out { guest, host } => copy_out(args, guest, &host),
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}", e.line("cabin cp"));
            match e {
                ExecError::Guest(_) | ExecError::HostFile { .. } | ExecError::Usage(_) => {
                    EXIT_COPY_FAILED
                }
                _ => EXIT_FAILURE,
            }
        }
    }
}

fn host_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ExecError {
    let path = path.to_owned();
    move |source| ExecError::HostFile { what, path, source }
}

fn copy_in(args: &CpArgs, host: &Path, guest: Vec<u8>) -> Result<(), ExecError> {
    let mut file = File::open(host).map_err(host_error("open", host))?;
    let meta = file.metadata().map_err(host_error("read", host))?;
    if !meta.is_file() {
        return Err(ExecError::Usage(format!(
            "{} is not a regular file",
            host.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    let request = Frame::CopyIn { path: guest, mode }
        .encode()
        .map_err(ExecError::Request)?;
    let mut stream = open(&args.api_sock, args.timeout)?;
    let sent = send_file(&mut stream, &request, &mut file);
    if let Err(SendError::Host(e)) = sent {
        // Closing without End makes the agent drop its temporary file.
        return Err(host_error("read", host)(e));
    }
    // Whether all was sent or the agent stopped taking data, its answer says why.
    if sent.is_err() {
        let _ = stream.set_read_timeout(Some(REASON_WAIT));
    }
    match read_frame(&mut stream)
        .map_err(read_error)
        .map_err(copy_closed)?
    {
        Some(Frame::Ok) => Ok(()),
        Some(Frame::Error { message, .. }) => Err(ExecError::Guest(message)),
        _ => Err(ExecError::CopyClosed),
    }
}

/// Why sending a file stopped.
enum SendError {
    /// Reading the host file failed.
    Host(io::Error),
    /// The connection no longer takes data.
    Connection,
}

fn send_file(stream: &mut UnixStream, request: &[u8], file: &mut File) -> Result<(), SendError> {
    stream
        .write_all(request)
        .map_err(|_| SendError::Connection)?;
    let mut buf = vec![0u8; DATA_CHUNK];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SendError::Host(e)),
        };
        write_frame(stream, &Frame::Data(buf[..n].to_vec())).map_err(|_| SendError::Connection)?;
        if answered(stream) {
            // The agent answers before End only to refuse: stop and read why.
            return Err(SendError::Connection);
        }
    }
    write_frame(stream, &Frame::End).map_err(|_| SendError::Connection)
}

/// Whether the agent has sent something (or closed) already.
fn answered(stream: &UnixStream) -> bool {
    let mut fds = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `fds` is one live pollfd and the count passed is 1, so poll writes only
    // its `revents`; the descriptor stays open while `stream` is borrowed. A zero
    // timeout only checks.
    let rc = unsafe { libc::poll(&mut fds, 1, 0) };
    rc > 0
}

/// A host file being written, removed on drop unless renamed into place.
struct Partial {
    path: PathBuf,
    done: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn copy_out(args: &CpArgs, guest: Vec<u8>, host: &Path) -> Result<(), ExecError> {
    let request = Frame::CopyOut { path: guest }
        .encode()
        .map_err(ExecError::Request)?;
    let mut stream = open(&args.api_sock, args.timeout)?;
    stream
        .write_all(&request)
        .map_err(|_| ExecError::CopyClosed)?;
    let mut partial_name = OsString::from_vec(host.as_os_str().as_bytes().to_vec());
    partial_name.push(".partial");
    let mut partial = Partial {
        path: PathBuf::from(partial_name),
        done: false,
    };
    let mut file = None;
    loop {
        match read_frame(&mut stream)
            .map_err(read_error)
            .map_err(copy_closed)?
        {
            Some(Frame::Data(data)) => {
                if file.is_none() {
                    let created = OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(&partial.path)
                        .map_err(host_error("create", &partial.path))?;
                    file = Some(created);
                }
                if let Some(file) = file.as_mut() {
                    file.write_all(&data)
                        .map_err(host_error("write", &partial.path))?;
                }
            }
            Some(Frame::End) => break,
            Some(Frame::Error { message, .. }) => return Err(ExecError::Guest(message)),
            Some(_) | None => return Err(ExecError::CopyClosed),
        }
    }
    let file = match file {
        Some(file) => file,
        // An empty file: no Data frame came.
        None => File::create(&partial.path).map_err(host_error("create", &partial.path))?,
    };
    file.sync_all()
        .map_err(host_error("write", &partial.path))?;
    std::fs::rename(&partial.path, host).map_err(host_error("rename a file onto", host))?;
    partial.done = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_needs_exactly_one_absolute_guest_path() {
        let plan = |s: &str, d: &str| plan(OsStr::new(s), OsStr::new(d));
        assert_eq!(
            plan("a.txt", "guest:/tmp/").unwrap(),
            Copy::In {
                host: "a.txt".into(),
                guest: b"/tmp/a.txt".to_vec()
            }
        );
        assert_eq!(
            plan("guest:/etc/hostname", "/nonexistent/h").unwrap(),
            Copy::Out {
                guest: b"/etc/hostname".to_vec(),
                host: "/nonexistent/h".into()
            }
        );
        assert!(plan("a", "b")
            .unwrap_err()
            .line("cabin cp")
            .contains("neither"));
        assert!(plan("guest:/a", "guest:/b").is_err());
        assert!(plan("a", "guest:rel")
            .unwrap_err()
            .line("cabin cp")
            .contains("absolute"));
    }
}
