//! cabin's logger: a `log::Log` installed once at startup ([`init`]) and
//! reconfigured at run time by Firecracker's `PUT /logger` ([`configure`]).
//!
//! At start, records go to stderr as `[<UTC time> <LEVEL>] <message>`, at the level
//! named by the `CABIN_LOG` environment variable (default `warn`). After
//! [`configure`], they go to the configured file or named pipe (or stay on stderr)
//! in Firecracker's shape:
//! `<RFC 3339 UTC time, ns> [cabin-<pid>:<thread>[:<LEVEL>][:<file>:<line>]] <message>`.
//!
//! Logging runs on threads confined by seccomp, so a record costs one `write(2)` of
//! a line built in memory beforehand (lines of several threads never interleave),
//! the clock is read with `clock_gettime` only (the UTC date is computed here, no
//! time zone files), nothing is opened, and no lock is held while writing. A named
//! pipe is written without blocking: when it is full the line is dropped and counted
//! in the metrics (`logger.missed_log_count`).

use std::fmt::{self, Write as _};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use crate::metrics::metrics;

/// The environment variable naming the startup level.
pub const LOG_ENV: &str = "CABIN_LOG";

/// The level used when `CABIN_LOG` is unset or not a level.
const DEFAULT_LEVEL: LevelFilter = LevelFilter::Warn;

/// Writes of at most this many bytes to a pipe are atomic (POSIX `PIPE_BUF`);
/// longer lines to a named pipe are cut to it so that they stay whole.
const PIPE_BUF: usize = libc::PIPE_BUF;

/// Failures of the logger's configuration.
#[derive(Debug, Error)]
pub enum LoggerError {
    /// The log path names a directory.
    #[error("Log path {0} is a directory: give a file or a named pipe")]
    IsDirectory(PathBuf),
    /// The directory that should hold the log file does not exist.
    #[error("The directory of log path {0} does not exist: create it first")]
    NoParentDirectory(PathBuf),
    /// The log path could not be opened for writing.
    #[error("Cannot open log path {0} for writing: check its permissions")]
    Open(PathBuf, #[source] io::Error),
    /// A level name that is none of the known ones.
    #[error("Unknown log level {0:?}: use Error, Warning, Info, Debug, Trace or Off")]
    UnknownLevel(String),
}

/// A log level as Firecracker's API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum LogLevel {
    /// Nothing is logged.
    Off,
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warning,
    /// Informational messages and above.
    Info,
    /// Debugging messages and above.
    Debug,
    /// Everything.
    Trace,
}

impl FromStr for LogLevel {
    type Err = LoggerError;

    /// Parses a level name, case-insensitively; `Warn` is taken for `Warning`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "off" => Ok(LogLevel::Off),
            "error" => Ok(LogLevel::Error),
            "warn" | "warning" => Ok(LogLevel::Warning),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            _ => Err(LoggerError::UnknownLevel(text.to_string())),
        }
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl From<LogLevel> for LevelFilter {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Off => LevelFilter::Off,
            LogLevel::Error => LevelFilter::Error,
            LogLevel::Warning => LevelFilter::Warn,
            LogLevel::Info => LevelFilter::Info,
            LogLevel::Debug => LevelFilter::Debug,
            LogLevel::Trace => LevelFilter::Trace,
        }
    }
}

/// The body of `PUT /logger` (and the config file's `logger` object). Options that
/// are absent keep their current value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggerConfig {
    /// A file (appended to, created if missing) or a named pipe; absent: stay where
    /// the log goes now (stderr at first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_path: Option<PathBuf>,
    /// The most detailed level written; absent: unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    /// Write the level of each record.
    pub show_level: bool,
    /// Write the source file and line of each record.
    pub show_log_origin: bool,
    /// Only records whose module path starts with this; absent: unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// Installs cabin's logger, writing to stderr at the level of `CABIN_LOG`. Called
/// once, at the start of `main`; later calls change nothing.
pub fn init() {
    let value = std::env::var(LOG_ENV).ok();
    let parsed = value.as_deref().map(str::parse::<LogLevel>);
    let level = match parsed {
        Some(Ok(level)) => LevelFilter::from(level),
        _ => DEFAULT_LEVEL,
    };
    LOGGER.replace(Output {
        target: Arc::new(Target::Stderr),
        level,
        module: None,
        style: Style::Startup,
    });
    if log::set_logger(&*LOGGER).is_ok() {
        log::set_max_level(level);
    }
    if let (Some(value), Some(Err(_))) = (value, parsed) {
        log::warn!(
            "{LOG_ENV}={value:?} is not a level (error, warn, info, debug, trace or off); \
             using warn"
        );
    }
}

/// Applies `PUT /logger`: from now on records go to `config.log_path` (if given) in
/// Firecracker's line format. Opens the path, so it runs on a thread without a
/// seccomp filter. On error nothing changes.
pub fn configure(config: &LoggerConfig) -> Result<(), LoggerError> {
    LOGGER.configure(config)?;
    log::set_max_level(LOGGER.current().level);
    Ok(())
}

/// The process-wide logger.
static LOGGER: LazyLock<Logger> = LazyLock::new(|| Logger::new(std::process::id()));

/// The logger proper; a value of its own so that tests need not install it.
#[derive(Debug)]
struct Logger {
    /// Read on every record (the `Arc` is cloned and the lock released before
    /// formatting and writing); replaced by [`Logger::configure`].
    output: RwLock<Arc<Output>>,
    /// cabin's process id, read once (no `getpid` per record).
    pid: u32,
}

/// Where records go and which ones.
#[derive(Debug)]
struct Output {
    target: Arc<Target>,
    level: LevelFilter,
    module: Option<String>,
    style: Style,
}

/// The shape of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    /// Until the first `PUT /logger`: `[<time, s> <LEVEL padded to 5>] <message>`.
    Startup,
    /// Firecracker's shape.
    Configured { show_level: bool, show_origin: bool },
}

/// The destination of log lines.
#[derive(Debug)]
enum Target {
    Stderr,
    Sink(Sink),
}

impl Logger {
    fn new(pid: u32) -> Logger {
        Logger {
            output: RwLock::new(Arc::new(Output {
                target: Arc::new(Target::Stderr),
                level: DEFAULT_LEVEL,
                module: None,
                style: Style::Startup,
            })),
            pid,
        }
    }

    fn current(&self) -> Arc<Output> {
        self.output
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn replace(&self, output: Output) {
        let old = std::mem::replace(
            &mut *self
                .output
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            Arc::new(output),
        );
        // A previous file is closed here, or by the last record still writing to it.
        drop(old);
    }

    fn configure(&self, config: &LoggerConfig) -> Result<(), LoggerError> {
        let current = self.current();
        let target = match &config.log_path {
            Some(path) => Arc::new(Target::Sink(Sink::open(path).map_err(|e| match e {
                OpenFailure::IsDirectory => LoggerError::IsDirectory(path.clone()),
                OpenFailure::NoParentDirectory => LoggerError::NoParentDirectory(path.clone()),
                OpenFailure::Open(source) => LoggerError::Open(path.clone(), source),
            })?)),
            None => current.target.clone(),
        };
        self.replace(Output {
            target,
            level: config.level.map_or(current.level, LevelFilter::from),
            module: config.module.clone().or_else(|| current.module.clone()),
            style: Style::Configured {
                show_level: config.show_level,
                show_origin: config.show_log_origin,
            },
        });
        Ok(())
    }
}

impl Output {
    fn accepts(&self, level: Level, module_path: Option<&str>) -> bool {
        level <= self.level
            && match &self.module {
                Some(prefix) => module_path.is_some_and(|path| path.starts_with(prefix.as_str())),
                None => true,
            }
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // The module is only known from a whole record.
        metadata.level() <= self.current().level
    }

    fn log(&self, record: &Record<'_>) {
        let output = self.current();
        if !output.accepts(record.level(), record.module_path()) {
            return;
        }
        metrics().log_line(record.level());
        let thread = std::thread::current();
        let mut line = format_line(
            output.style,
            record,
            self.pid,
            thread.name().unwrap_or("unnamed"),
            SystemTime::now(),
        );
        let written = match &*output.target {
            Target::Stderr => write_line(libc::STDERR_FILENO, &line),
            Target::Sink(sink) => {
                if sink.fifo {
                    cap_line(&mut line, PIPE_BUF);
                }
                sink.write_line(&line)
            }
        };
        if !matches!(written, Ok(WriteOutcome::Written)) {
            metrics().log_dropped();
        }
    }

    fn flush(&self) {}
}

/// Builds one line, newline included; newlines inside the message become spaces.
fn format_line(
    style: Style,
    record: &Record<'_>,
    pid: u32,
    thread: &str,
    now: SystemTime,
) -> Vec<u8> {
    let time = UtcTime::from(now);
    let mut line = String::with_capacity(128);
    // Writing to a String cannot fail.
    let _ = match style {
        Style::Startup => write!(line, "[{} {:<5}] ", time.seconds(), record.level()),
        Style::Configured {
            show_level,
            show_origin,
        } => {
            let _ = write!(line, "{} [cabin-{pid}:{thread}", time.nanoseconds());
            if show_level {
                let _ = write!(line, ":{}", record.level());
            }
            if show_origin {
                let _ = write!(
                    line,
                    ":{}:{}",
                    record.file().unwrap_or("?"),
                    record.line().unwrap_or(0)
                );
            }
            line.write_str("] ")
        }
    };
    let message_start = line.len();
    let _ = write!(line, "{}", record.args());
    let mut line = line.into_bytes();
    for byte in &mut line[message_start..] {
        if matches!(*byte, b'\n' | b'\r') {
            *byte = b' ';
        }
    }
    line.push(b'\n');
    line
}

/// Cuts a line to at most `max` bytes, keeping its final newline.
fn cap_line(line: &mut Vec<u8>, max: usize) {
    if line.len() > max {
        line.truncate(max - 1);
        line.push(b'\n');
    }
}

/// A calendar time in UTC, computed without time zone data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct UtcTime {
    year: u64,
    month: u64,
    day: u64,
    hour: u64,
    minute: u64,
    second: u64,
    nanos: u32,
}

impl From<SystemTime> for UtcTime {
    fn from(time: SystemTime) -> UtcTime {
        // A clock before 1970 shows as 1970-01-01.
        let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since_epoch.as_secs();
        let mut days = secs / 86_400;
        let mut year = 1970;
        loop {
            let length = if is_leap(year) { 366 } else { 365 };
            if days < length {
                break;
            }
            days -= length;
            year += 1;
        }
        let february = if is_leap(year) { 29 } else { 28 };
        let lengths = [31, february, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let mut month = 1;
        for length in lengths {
            if days < length {
                break;
            }
            days -= length;
            month += 1;
        }
        let in_day = secs % 86_400;
        UtcTime {
            year,
            month,
            day: days + 1,
            hour: in_day / 3600,
            minute: in_day % 3600 / 60,
            second: in_day % 60,
            nanos: since_epoch.subsec_nanos(),
        }
    }
}

fn is_leap(year: u64) -> bool {
    // Every 4th year, except centuries not divisible by 400.
    matches!((year % 4, year % 100, year % 400), (_, _, 0) | (0, 1.., _))
}

impl UtcTime {
    /// `2024-02-29T12:34:56Z`
    fn seconds(self) -> impl fmt::Display {
        Rfc3339 {
            time: self,
            nanos: false,
        }
    }

    /// `2024-02-29T12:34:56.000000005Z`
    fn nanoseconds(self) -> impl fmt::Display {
        Rfc3339 {
            time: self,
            nanos: true,
        }
    }
}

struct Rfc3339 {
    time: UtcTime,
    nanos: bool,
}

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.time;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year, t.month, t.day, t.hour, t.minute, t.second
        )?;
        if self.nanos {
            write!(f, ".{:09}", t.nanos)?;
        }
        f.write_str("Z")
    }
}

/// An output file or named pipe opened for lines (the log here, metrics too).
#[derive(Debug)]
pub(crate) struct Sink {
    file: File,
    /// A named pipe, opened non-blocking: a full pipe drops lines.
    pub(crate) fifo: bool,
}

/// Why [`Sink::open`] failed; each module names the path in its own error.
#[derive(Debug)]
pub(crate) enum OpenFailure {
    IsDirectory,
    NoParentDirectory,
    Open(io::Error),
}

impl From<OpenFailure> for io::Error {
    fn from(failure: OpenFailure) -> io::Error {
        match failure {
            OpenFailure::IsDirectory => io::Error::other("it is a directory"),
            OpenFailure::NoParentDirectory => io::Error::other("its directory does not exist"),
            OpenFailure::Open(e) => e,
        }
    }
}

/// What became of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteOutcome {
    /// All of it was written.
    Written,
    /// None or only part of it was written: a full pipe or a short write.
    Dropped,
}

impl Sink {
    /// Opens a named pipe read-write and non-blocking (opening never waits for a
    /// reader, writing never waits for room), anything else write-only for
    /// appending, created if missing.
    pub(crate) fn open(path: &Path) -> Result<Sink, OpenFailure> {
        let mut options = OpenOptions::new();
        let fifo = match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => return Err(OpenFailure::IsDirectory),
            Ok(meta) => meta.file_type().is_fifo(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let parent = path
                    .parent()
                    .filter(|parent| !parent.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                if !parent.is_dir() {
                    return Err(OpenFailure::NoParentDirectory);
                }
                false
            }
            Err(e) => return Err(OpenFailure::Open(e)),
        };
        if fifo {
            options
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK);
        } else {
            options.append(true).create(true);
        }
        let file = options.open(path).map_err(OpenFailure::Open)?;
        Ok(Sink { file, fifo })
    }

    /// The open file, for a writer that is not line-based (the serial console).
    pub(crate) fn into_file(self) -> File {
        self.file
    }

    /// Writes `line` with one `write(2)`.
    pub(crate) fn write_line(&self, line: &[u8]) -> io::Result<WriteOutcome> {
        write_line(std::os::fd::AsRawFd::as_raw_fd(&self.file), line)
    }
}

/// One `write(2)` of `line` to `fd` (again only if a signal interrupted it before
/// anything was written); a full non-blocking pipe is `Dropped`, not an error.
fn write_line(fd: libc::c_int, line: &[u8]) -> io::Result<WriteOutcome> {
    loop {
        // SAFETY: `line` is a live slice of `line.len()` initialized bytes for the
        // duration of the call, and write(2) only reads from it. `fd` is either
        // stderr or the descriptor of a `Sink` the caller borrows, so it stays open
        // (and is not reused for another file) until the call returns.
        let written = unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
        if written >= 0 {
            return Ok(if written as usize == line.len() {
                WriteOutcome::Written
            } else {
                WriteOutcome::Dropped
            });
        }
        let error = io::Error::last_os_error();
        match error.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(WriteOutcome::Dropped),
            _ => return Err(error),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Temporary directories and named pipes for the logger's and metrics' tests.

    use std::fs::{File, OpenOptions};
    use std::io::{self, Write};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A directory removed with its contents on drop.
    #[derive(Debug)]
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new() -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "cabin-obs-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Makes a named pipe at `path`.
    pub(crate) fn mkfifo(path: &Path) {
        let mut name = path.as_os_str().as_bytes().to_vec();
        name.push(0);
        // SAFETY: `name` is a NUL-terminated path that outlives the call; mkfifo
        // only reads it.
        let rc = unsafe { libc::mkfifo(name.as_ptr().cast(), 0o600) };
        assert_eq!(rc, 0, "mkfifo: {}", io::Error::last_os_error());
    }

    /// Opens the pipe at `path` (read-write, non-blocking) and fills it; the pipe
    /// stays full while the returned end is open. Reading from it drains the pipe.
    pub(crate) fn fill_fifo(path: &Path) -> File {
        let mut end = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap();
        let chunk = [b'x'; 4096];
        loop {
            match end.write(&chunk) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling the pipe: {e}"),
            }
        }
        // Whatever room a partial chunk left is filled byte by byte.
        while end.write(b"x").is_ok() {}
        end
    }
}

#[cfg(test)]
#[path = "logger_tests.rs"]
mod tests;
