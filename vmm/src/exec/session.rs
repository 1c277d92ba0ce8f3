//! `cabin exec`: one command in the guest, its stdio joined to this process's.

use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::thread;

use cabin_agent::{read_frame, write_frame, ExecRequest, ExitReason, Frame, DATA_CHUNK};

use super::{
    open, read_error, ExecArgs, ExecError, EXIT_FAILURE, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND,
};

/// Exit status when this process's stdout is closed (as a shell reports SIGPIPE).
const EXIT_STDOUT_CLOSED: i32 = 128 + libc::SIGPIPE;

/// Runs `cabin exec`: the command's exit status, or [`EXIT_NOT_FOUND`],
/// [`EXIT_NOT_EXECUTABLE`] or [`EXIT_FAILURE`] with one line on stderr.
pub fn run_exec(args: &ExecArgs) -> i32 {
    match exec(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", e.line("cabin exec"));
            match e {
                ExecError::NotFound(_) => EXIT_NOT_FOUND,
                ExecError::NotExecutable { .. } => EXIT_NOT_EXECUTABLE,
                _ => EXIT_FAILURE,
            }
        }
    }
}

fn request(args: &ExecArgs) -> ExecRequest {
    ExecRequest {
        argv: args
            .command
            .iter()
            .map(|arg| arg.as_bytes().to_vec())
            .collect(),
        env: args.env.iter().map(|e| e.as_bytes().to_vec()).collect(),
        cwd: args
            .workdir
            .as_ref()
            .map(|dir| dir.as_os_str().as_bytes().to_vec()),
    }
}

fn exec(args: &ExecArgs) -> Result<i32, ExecError> {
    let request = request(args);
    // Refuse what the agent would refuse before connecting.
    let first = Frame::Exec(request).encode().map_err(ExecError::Request)?;
    let mut stream = open(&args.api_sock, args.timeout)?;
    stream.write_all(&first).map_err(|_| ExecError::Closed)?;
    let writer = stream.try_clone().map_err(|_| ExecError::Closed)?;
    // The stdin thread is not joined: it may be blocked reading a terminal when the
    // command ends, and returning from main ends it.
    let forward = thread::Builder::new()
        .name("stdin".into())
        .spawn(move || forward_stdin(writer));
    if forward.is_err() {
        return Err(ExecError::Closed);
    }
    let program = args.command[0].to_string_lossy().into_owned();
    receive(&mut stream, &program)
}

/// Sends this process's stdin as Stdin frames, then StdinEof. The only writer once
/// the request is sent.
fn forward_stdin(mut stream: UnixStream) {
    let mut buf = vec![0u8; DATA_CHUNK];
    let mut stdin = io::stdin().lock();
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if write_frame(&mut stream, &Frame::Stdin(buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // An unreadable stdin (closed, a directory) counts as empty.
            Err(_) => break,
        }
    }
    let _ = write_frame(&mut stream, &Frame::StdinEof);
}

/// Writes the command's output here as it comes; returns its exit status.
fn receive(stream: &mut UnixStream, program: &str) -> Result<i32, ExecError> {
    let mut stdout = io::stdout().lock();
    loop {
        let frame = read_frame(stream).map_err(read_error)?;
        match frame {
            Some(Frame::Stdout(data)) => {
                if stdout
                    .write_all(&data)
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    // Nobody reads our output: stop; closing the connection ends
                    // the command.
                    return Ok(EXIT_STDOUT_CLOSED);
                }
            }
            Some(Frame::Stderr(data)) => {
                let mut stderr = io::stderr().lock();
                let _ = stderr.write_all(&data).and_then(|()| stderr.flush());
            }
            Some(Frame::Exit(ExitReason::Code(code))) => return Ok(code & 0xff),
            Some(Frame::Exit(ExitReason::Signal(signal))) => return Ok(128 + (signal & 0x7f)),
            Some(Frame::Error { errno, message }) => {
                return Err(spawn_error(program, errno, message))
            }
            Some(other) => {
                return Err(ExecError::Protocol(cabin_agent::ReadError::Protocol(
                    cabin_agent::ProtocolError::Malformed {
                        frame: other.name(),
                        problem: "not expected during Exec",
                    },
                )))
            }
            None => return Err(ExecError::Closed),
        }
    }
}

/// The error for an Error frame answering Exec.
fn spawn_error(program: &str, errno: i32, message: String) -> ExecError {
    match errno {
        libc::ENOENT => ExecError::NotFound(program.to_owned()),
        libc::EACCES | libc::ENOEXEC | libc::EISDIR | libc::ENOTDIR | libc::ELOOP => {
            ExecError::NotExecutable {
                program: program.to_owned(),
                message,
            }
        }
        _ => ExecError::Guest(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_error_picks_127_and_126() {
        assert!(matches!(
            spawn_error("x", libc::ENOENT, "No such file or directory".into()),
            ExecError::NotFound(_)
        ));
        let err = spawn_error("/etc", libc::EACCES, "Permission denied".into());
        assert_eq!(
            err.line("cabin exec"),
            "cabin exec: /etc: Permission denied"
        );
        assert!(matches!(
            spawn_error("x", 0, "busy".into()),
            ExecError::Guest(_)
        ));
    }
}
