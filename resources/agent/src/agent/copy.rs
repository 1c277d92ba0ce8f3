//! CopyIn and CopyOut: one regular file into or out of the guest.
//!
//! CopyIn writes a temporary file next to the destination, fsyncs it, gives it the
//! requested mode (fchmod, so the umask does not apply) and renames it into place:
//! the destination is either the old file or the whole new one, never a part.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{os_text, refuse};
use crate::protocol::{read_frame, write_frame, Frame, DATA_CHUNK};

/// Distinguishes the temporary files of concurrent copies to the same directory.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// A temporary file removed on drop unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    kept: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn describe(path: &Path, what: &str, e: &io::Error) -> String {
    format!("cannot {what} {}: {}", path.display(), os_text(e))
}

/// Receives a file into `path` with permission bits `mode`.
pub fn copy_in(mut conn: File, path: Vec<u8>, mode: u32) {
    let path = PathBuf::from(OsStr::from_bytes(&path));
    match receive(&mut conn, &path, mode) {
        Ok(true) => {
            let _ = write_frame(&mut conn, &Frame::Ok);
        }
        // The client went away or broke the protocol: nothing to answer.
        Ok(false) => {}
        Err(message) => {
            refuse(&mut conn, message);
            // The client may still be sending: take the rest until its End (or until
            // it stops early on seeing the answer), so that closing cannot overtake
            // the answer on its way.
            while let Ok(Some(frame)) = read_frame(&mut conn) {
                if frame == Frame::End {
                    break;
                }
            }
        }
    }
}

/// Ok(true) once the file is in place, Ok(false) when the client went away.
fn receive(conn: &mut File, path: &Path, mode: u32) -> Result<bool, String> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(format!("{} is not a file path", path.display()));
    };
    if path.is_dir() {
        return Err(format!("{} is a directory", path.display()));
    }
    let mut temp_name = OsStr::new(".").to_os_string();
    temp_name.push(name);
    temp_name.push(format!(
        ".cabin-agent-{}-{}",
        std::process::id(),
        NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
    ));
    let temp_path = dir.join(temp_name);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp_path)
        .map_err(|e| describe(path, "create", &e))?;
    let mut temp = TempFile {
        path: temp_path,
        kept: false,
    };
    loop {
        match read_frame(conn) {
            Ok(Some(Frame::Data(data))) => file
                .write_all(&data)
                .map_err(|e| describe(path, "write", &e))?,
            Ok(Some(Frame::End)) => break,
            Ok(Some(other)) => {
                return Err(format!("expected Data or End, got {}", other.name()));
            }
            Ok(None) | Err(_) => return Ok(false),
        }
    }
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| file.sync_all())
        .map_err(|e| describe(path, "write", &e))?;
    std::fs::rename(&temp.path, path).map_err(|e| describe(path, "rename a file onto", &e))?;
    temp.kept = true;
    // The rename lasts across a crash once the directory is synced too.
    if let Ok(dir) = File::open(if dir.as_os_str().is_empty() {
        Path::new("/")
    } else {
        dir
    }) {
        let _ = dir.sync_all();
    }
    Ok(true)
}

/// Sends the regular file at `path`.
pub fn copy_out(mut conn: File, path: Vec<u8>) {
    let path = PathBuf::from(OsStr::from_bytes(&path));
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) => return refuse(&mut conn, describe(&path, "open", &e)),
    };
    match file.metadata() {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => {
            return refuse(
                &mut conn,
                format!("{} is not a regular file", path.display()),
            )
        }
        Err(e) => return refuse(&mut conn, describe(&path, "read", &e)),
    }
    let mut buf = vec![0u8; DATA_CHUNK];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if write_frame(&mut conn, &Frame::Data(buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return refuse(&mut conn, describe(&path, "read", &e)),
        }
    }
    let _ = write_frame(&mut conn, &Frame::End);
}
