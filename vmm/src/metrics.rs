//! Firecracker-style metrics: process-wide counters ([`metrics`]) written as JSON
//! lines to a file or named pipe ([`MetricsSink`]) every [`METRICS_PERIOD`] and on
//! `FlushMetrics`.
//!
//! Counting is a relaxed atomic increment (no lock, no allocation), so the API
//! threads, the vCPU threads and the SIGSYS handler ([`SECCOMP_FAULTS`]) count
//! directly. Devices register a closure that returns their cumulative counters.
//!
//! Each line holds, like Firecracker's, the change since the previous line written
//! to the same sink (the first line: the totals since start):
//! `{"utc_timestamp_ms": N, "api_server": {..}, "vcpu": {..}, "seccomp": {..},
//! "logger": {..}, "<device>": {..}, ..}`. Non-negative integers are counters;
//! other values (floats, strings, booleans) are written as they are.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kvm_ioctls::VcpuExit;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::logger::{OpenFailure, Sink, WriteOutcome};

/// How often the VMM writes a metrics line.
pub const METRICS_PERIOD: Duration = Duration::from_secs(60);

/// System calls blocked by a seccomp filter; incremented by the SIGSYS handler (a
/// plain atomic add: async-signal-safe).
pub static SECCOMP_FAULTS: AtomicU64 = AtomicU64::new(0);

// The SIGSYS handler relies on 64-bit atomics being lock-free instructions.
const _: () = assert!(cfg!(target_has_atomic = "64"));

/// The API endpoints counted, by the key passed to [`Metrics::api_request`]; any
/// other key counts as `"other"` (the last).
pub const API_KEYS: [&str; 18] = [
    "root",
    "version",
    "actions",
    "boot_source",
    "machine_config",
    "drives",
    "network_interfaces",
    "logger",
    "metrics",
    "entropy",
    "serial",
    "vm",
    "vm_config",
    "vsock",
    "snapshot",
    "balloon",
    "mmds",
    "other",
];

const API_OTHER: usize = API_KEYS.len() - 1;

/// Top-level keys of a line that devices cannot take.
const RESERVED_NAMES: [&str; 5] = [
    "utc_timestamp_ms",
    "api_server",
    "vcpu",
    "seccomp",
    "logger",
];

/// Log levels in `log::Level` order (Error = 1 .. Trace = 5).
const LOG_LEVEL_KEYS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// Why a vCPU left the guest, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// Port read.
    IoIn,
    /// Port write.
    IoOut,
    /// MMIO read.
    MmioRead,
    /// MMIO write.
    MmioWrite,
    /// HLT reached user space.
    Hlt,
    /// Triple fault.
    Shutdown,
    /// Reset, power-off or another system event.
    SystemEvent,
    /// KVM could not handle an instruction.
    InternalError,
    /// VM entry failed.
    FailEntry,
    /// Anything else.
    Other,
}

impl ExitReason {
    /// Every reason, in counter order.
    pub const ALL: [ExitReason; 10] = [
        ExitReason::IoIn,
        ExitReason::IoOut,
        ExitReason::MmioRead,
        ExitReason::MmioWrite,
        ExitReason::Hlt,
        ExitReason::Shutdown,
        ExitReason::SystemEvent,
        ExitReason::InternalError,
        ExitReason::FailEntry,
        ExitReason::Other,
    ];

    /// The counter's name in the `vcpu` object.
    pub fn key(self) -> &'static str {
        match self {
            ExitReason::IoIn => "exit_io_in",
            ExitReason::IoOut => "exit_io_out",
            ExitReason::MmioRead => "exit_mmio_read",
            ExitReason::MmioWrite => "exit_mmio_write",
            ExitReason::Hlt => "exit_hlt",
            ExitReason::Shutdown => "exit_shutdown",
            ExitReason::SystemEvent => "exit_system_event",
            ExitReason::InternalError => "exit_internal_error",
            ExitReason::FailEntry => "exit_fail_entry",
            ExitReason::Other => "exit_other",
        }
    }
}

impl From<&VcpuExit<'_>> for ExitReason {
    fn from(exit: &VcpuExit<'_>) -> Self {
        match exit {
            VcpuExit::IoIn(..) => ExitReason::IoIn,
            VcpuExit::IoOut(..) => ExitReason::IoOut,
            VcpuExit::MmioRead(..) => ExitReason::MmioRead,
            VcpuExit::MmioWrite(..) => ExitReason::MmioWrite,
            VcpuExit::Hlt => ExitReason::Hlt,
            VcpuExit::Shutdown => ExitReason::Shutdown,
            VcpuExit::SystemEvent(..) => ExitReason::SystemEvent,
            VcpuExit::InternalError => ExitReason::InternalError,
            VcpuExit::FailEntry(..) => ExitReason::FailEntry,
            _ => ExitReason::Other,
        }
    }
}

/// The API endpoint key of a request path: `/machine-config` -> `"machine_config"`,
/// `/drives/rootfs` -> `"drives"`, `/vm/config` -> `"vm_config"`, `/` -> `"root"`.
pub fn api_path_key(path: &str) -> &'static str {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut segments = path.trim_start_matches('/').split('/');
    let first = segments.next().unwrap_or("");
    match first {
        "" => "root",
        "vm" if segments.next() == Some("config") => "vm_config",
        "boot-source" => "boot_source",
        "machine-config" => "machine_config",
        "network-interfaces" => "network_interfaces",
        other => API_KEYS[..API_OTHER]
            .iter()
            .copied()
            .find(|key| *key == other && !key.contains('_'))
            .unwrap_or("other"),
    }
}

/// A device's counters: a JSON object of numbers, cumulative since the device
/// started.
pub type DeviceSource = Box<dyn Fn() -> Value + Send + Sync>;

/// The process-wide counters.
pub struct Metrics {
    api_requests: [AtomicU64; API_KEYS.len()],
    api_failures: [AtomicU64; API_KEYS.len()],
    vcpu_exits: [AtomicU64; ExitReason::ALL.len()],
    log_lines: [AtomicU64; LOG_LEVEL_KEYS.len()],
    log_dropped: AtomicU64,
    metrics_dropped: AtomicU64,
    /// Locked only to register, clear or read devices, never across I/O.
    devices: Mutex<Vec<(String, DeviceSource)>>,
}

static METRICS: Metrics = Metrics::new();

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl Metrics {
    const fn new() -> Metrics {
        Metrics {
            api_requests: [const { AtomicU64::new(0) }; API_KEYS.len()],
            api_failures: [const { AtomicU64::new(0) }; API_KEYS.len()],
            vcpu_exits: [const { AtomicU64::new(0) }; ExitReason::ALL.len()],
            log_lines: [const { AtomicU64::new(0) }; LOG_LEVEL_KEYS.len()],
            log_dropped: AtomicU64::new(0),
            metrics_dropped: AtomicU64::new(0),
            devices: Mutex::new(Vec::new()),
        }
    }

    /// Counts one API request to the endpoint `path_key` (one of [`API_KEYS`]; see
    /// [`api_path_key`]), and a failure if `failed`.
    pub fn api_request(&self, path_key: &'static str, failed: bool) {
        let index = API_KEYS[..API_OTHER]
            .iter()
            .position(|key| *key == path_key)
            .unwrap_or(API_OTHER);
        self.api_requests[index].fetch_add(1, Ordering::Relaxed);
        if failed {
            self.api_failures[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests and failures counted for `path_key` so far.
    pub fn api_counts(&self, path_key: &str) -> (u64, u64) {
        let index = API_KEYS
            .iter()
            .position(|key| *key == path_key)
            .unwrap_or(API_OTHER);
        (
            self.api_requests[index].load(Ordering::Relaxed),
            self.api_failures[index].load(Ordering::Relaxed),
        )
    }

    /// Counts one vCPU exit.
    pub fn vcpu_exit(&self, reason: ExitReason) {
        self.vcpu_exits[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// vCPU exits counted for `reason` so far.
    pub fn vcpu_exit_count(&self, reason: ExitReason) -> u64 {
        self.vcpu_exits[reason as usize].load(Ordering::Relaxed)
    }

    /// Counts a log record written at `level`.
    pub(crate) fn log_line(&self, level: log::Level) {
        self.log_lines[level as usize - 1].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a log line lost (a full pipe, a failed write).
    pub(crate) fn log_dropped(&self) {
        self.log_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Log lines lost so far.
    pub fn log_dropped_count(&self) -> u64 {
        self.log_dropped.load(Ordering::Relaxed)
    }

    /// Metrics lines lost so far (full pipe).
    pub fn metrics_dropped_count(&self) -> u64 {
        self.metrics_dropped.load(Ordering::Relaxed)
    }

    fn devices(&self) -> MutexGuard<'_, Vec<(String, DeviceSource)>> {
        self.devices
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a device's counters to every line under `name` (e.g. `"block_rootfs"`,
    /// `"net_eth0"`), replacing a device registered under the same name. `source`
    /// runs on the thread writing metrics, with the device list locked: it must not
    /// register or clear devices, nor block. The names of the fixed sections are
    /// refused (logged).
    pub fn register_device(&self, name: String, source: DeviceSource) {
        if RESERVED_NAMES.contains(&name.as_str()) {
            log::warn!("metrics: device name {name:?} is reserved; its counters are not written");
            return;
        }
        let mut devices = self.devices();
        match devices.iter_mut().find(|(known, _)| *known == name) {
            Some(entry) => entry.1 = source,
            None => devices.push((name, source)),
        }
    }

    /// [`Metrics::register_device`] for a device's shared counters that serialize
    /// to a JSON object of numbers.
    pub fn register_counters<T>(&self, name: String, counters: std::sync::Arc<T>)
    where
        T: serde::Serialize + Send + Sync + 'static,
    {
        self.register_device(
            name,
            Box::new(move || serde_json::to_value(&*counters).unwrap_or_default()),
        );
    }

    /// Forgets every registered device (when the VM is torn down).
    pub fn clear_devices(&self) {
        self.devices().clear();
    }

    /// Every counter, cumulative since start, as one JSON object (no timestamp).
    pub fn snapshot(&self) -> Value {
        let mut root = Map::new();
        let mut api = Map::new();
        for (index, key) in API_KEYS.iter().enumerate() {
            api.insert(
                format!("{key}_count"),
                self.api_requests[index].load(Ordering::Relaxed).into(),
            );
            api.insert(
                format!("{key}_fails"),
                self.api_failures[index].load(Ordering::Relaxed).into(),
            );
        }
        root.insert("api_server".into(), api.into());
        let vcpu: Map<String, Value> = ExitReason::ALL
            .iter()
            .map(|reason| (reason.key().into(), self.vcpu_exit_count(*reason).into()))
            .collect();
        root.insert("vcpu".into(), vcpu.into());
        let mut seccomp = Map::new();
        seccomp.insert(
            "num_faults".into(),
            SECCOMP_FAULTS.load(Ordering::Relaxed).into(),
        );
        root.insert("seccomp".into(), seccomp.into());
        let mut logger: Map<String, Value> = LOG_LEVEL_KEYS
            .iter()
            .zip(&self.log_lines)
            .map(|(key, count)| (format!("lines_{key}"), count.load(Ordering::Relaxed).into()))
            .collect();
        logger.insert("missed_log_count".into(), self.log_dropped_count().into());
        logger.insert(
            "missed_metrics_count".into(),
            self.metrics_dropped_count().into(),
        );
        root.insert("logger".into(), logger.into());
        for (name, source) in self.devices().iter() {
            root.insert(name.clone(), source());
        }
        Value::Object(root)
    }
}

/// Failures to open a metrics destination.
#[derive(Debug, Error)]
pub enum MetricsError {
    /// The metrics path names a directory.
    #[error("Metrics path {0} is a directory: give a file or a named pipe")]
    IsDirectory(PathBuf),
    /// The directory that should hold the metrics file does not exist.
    #[error("The directory of metrics path {0} does not exist: create it first")]
    NoParentDirectory(PathBuf),
    /// The metrics path could not be opened for writing.
    #[error("Cannot open metrics path {0} for writing: check its permissions")]
    Open(PathBuf, #[source] io::Error),
}

/// A file or named pipe receiving metrics lines (`PUT /metrics`).
#[derive(Debug)]
pub struct MetricsSink {
    path: PathBuf,
    sink: Sink,
    /// Cumulative counters at the last line written, by key path (`vcpu/exit_hlt`).
    /// Not a `HashMap`: its random seed would need `getrandom`, which the seccomp
    /// filters do not allow.
    previous: BTreeMap<String, u64>,
}

impl MetricsSink {
    /// Opens `path`: a regular file is appended to (created if missing), a named pipe
    /// is opened without waiting for a reader. Opens a file, so it runs on a thread
    /// without a seccomp filter.
    pub fn open(path: &Path) -> Result<MetricsSink, MetricsError> {
        let sink = Sink::open(path).map_err(|e| match e {
            OpenFailure::IsDirectory => MetricsError::IsDirectory(path.to_path_buf()),
            OpenFailure::NoParentDirectory => MetricsError::NoParentDirectory(path.to_path_buf()),
            OpenFailure::Open(source) => MetricsError::Open(path.to_path_buf(), source),
        })?;
        Ok(MetricsSink {
            path: path.to_path_buf(),
            sink,
            previous: BTreeMap::new(),
        })
    }

    /// Where the lines go.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one line of the process-wide metrics with one `write(2)`: the change
    /// since the previous line. A full pipe drops the line (counted as
    /// `logger.missed_metrics_count`; its changes go into the next line) and is not
    /// an error. Uses only `write` and `clock_gettime`.
    pub fn flush(&mut self) -> io::Result<()> {
        self.flush_from(metrics())
    }

    fn flush_from(&mut self, metrics: &Metrics) -> io::Result<()> {
        let mut values = metrics.snapshot();
        let mut totals = BTreeMap::new();
        subtract_previous(&mut values, &mut String::new(), &self.previous, &mut totals);
        let line = json_line(&values, utc_timestamp_ms())?;
        match self.sink.write_line(&line)? {
            WriteOutcome::Written => self.previous = totals,
            WriteOutcome::Dropped => {
                metrics.metrics_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn utc_timestamp_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Replaces every counter (non-negative integer) in `value` by its change since
/// `previous`, and records its total in `totals`, by key path. A counter that went
/// down (a device registered again) counts from zero.
fn subtract_previous(
    value: &mut Value,
    key: &mut String,
    previous: &BTreeMap<String, u64>,
    totals: &mut BTreeMap<String, u64>,
) {
    match value {
        Value::Object(map) => {
            for (name, child) in map.iter_mut() {
                let parent_len = key.len();
                if parent_len > 0 {
                    key.push('/');
                }
                key.push_str(name);
                subtract_previous(child, key, previous, totals);
                key.truncate(parent_len);
            }
        }
        Value::Number(number) => {
            if let Some(total) = number.as_u64() {
                let delta = match previous.get(key.as_str()) {
                    Some(&before) if before <= total => total - before,
                    _ => total,
                };
                totals.insert(key.clone(), total);
                *value = delta.into();
            }
        }
        _ => {}
    }
}

/// `{"utc_timestamp_ms":N,<the members of values>}` and a newline.
fn json_line(values: &Value, timestamp_ms: u64) -> io::Result<Vec<u8>> {
    let body = serde_json::to_vec(values)?;
    let mut line = Vec::with_capacity(body.len() + 40);
    line.extend_from_slice(format!("{{\"utc_timestamp_ms\":{timestamp_ms}").as_bytes());
    match body.as_slice() {
        [b'{', b'}'] => line.push(b'}'),
        [b'{', members @ ..] => {
            line.push(b',');
            line.extend_from_slice(members);
        }
        _ => line.push(b'}'),
    }
    line.push(b'\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::mpsc;

    use serde_json::json;

    use super::*;
    use crate::logger::test_util::{fill_fifo, mkfifo, TempDir};

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn api_request_counts_requests_and_failures_per_key() {
        let metrics = Metrics::new();

        metrics.api_request("drives", false);
        metrics.api_request("drives", true);
        metrics.api_request("no-such-endpoint", true);

        assert_eq!(metrics.api_counts("drives"), (2, 1));
        assert_eq!(metrics.api_counts("other"), (1, 1));
        assert_eq!(metrics.api_counts("logger"), (0, 0));
    }

    #[test]
    fn api_path_key_maps_firecracker_paths() {
        assert_eq!(api_path_key("/"), "root");
        assert_eq!(api_path_key("/machine-config"), "machine_config");
        assert_eq!(api_path_key("/drives/rootfs"), "drives");
        assert_eq!(
            api_path_key("/network-interfaces/eth0"),
            "network_interfaces"
        );
        assert_eq!(api_path_key("/vm/config"), "vm_config");
        assert_eq!(api_path_key("/vm"), "vm");
        assert_eq!(api_path_key("/snapshot/create"), "snapshot");
        assert_eq!(api_path_key("/version?x=1"), "version");
        assert_eq!(api_path_key("/machine_config"), "other");
        assert_eq!(api_path_key("/pmem/x"), "other");
    }

    #[test]
    fn vcpu_exit_counts_by_reason() {
        let metrics = Metrics::new();

        metrics.vcpu_exit(ExitReason::from(&VcpuExit::Hlt));
        metrics.vcpu_exit(ExitReason::from(&VcpuExit::IoOut(0x3f8, &[1])));
        metrics.vcpu_exit(ExitReason::from(&VcpuExit::IoOut(0x3f8, &[2])));
        metrics.vcpu_exit(ExitReason::from(&VcpuExit::Unsupported(99)));

        assert_eq!(metrics.vcpu_exit_count(ExitReason::Hlt), 1);
        assert_eq!(metrics.vcpu_exit_count(ExitReason::IoOut), 2);
        assert_eq!(metrics.vcpu_exit_count(ExitReason::Other), 1);
        assert_eq!(metrics.vcpu_exit_count(ExitReason::MmioRead), 0);
    }

    #[test]
    fn snapshot_has_every_section_and_devices() {
        let metrics = Metrics::new();
        metrics.log_line(log::Level::Warn);
        metrics.register_device("block_rootfs".into(), Box::new(|| json!({"read_count": 7})));

        let snapshot = metrics.snapshot();

        assert_eq!(snapshot["api_server"]["drives_count"], 0);
        assert_eq!(snapshot["vcpu"]["exit_hlt"], 0);
        assert!(snapshot["seccomp"]["num_faults"].is_u64());
        assert_eq!(snapshot["logger"]["lines_warn"], 1);
        assert_eq!(snapshot["block_rootfs"]["read_count"], 7);
    }

    #[test]
    fn register_device_same_name_replaces_and_clear_removes() {
        let metrics = Metrics::new();
        metrics.register_device("entropy".into(), Box::new(|| json!({"bytes": 1})));
        metrics.register_device("entropy".into(), Box::new(|| json!({"bytes": 2})));
        metrics.register_device("vcpu".into(), Box::new(|| json!({"bytes": 3})));

        assert_eq!(metrics.snapshot()["entropy"]["bytes"], 2);
        assert_eq!(metrics.snapshot()["vcpu"]["exit_hlt"], 0);
        metrics.clear_devices();
        assert!(metrics.snapshot().get("entropy").is_none());
    }

    #[test]
    fn flush_second_line_holds_only_the_change() {
        let dir = TempDir::new();
        let path = dir.path().join("metrics.json");
        let metrics = Metrics::new();
        let reads = std::sync::Arc::new(AtomicU64::new(5));
        let device_reads = reads.clone();
        metrics.register_device(
            "block_rootfs".into(),
            Box::new(move || json!({"read_count": device_reads.load(Ordering::Relaxed), "mode": "rw", "latency": 1.5})),
        );
        let mut sink = MetricsSink::open(&path).unwrap();
        metrics.vcpu_exit(ExitReason::MmioWrite);
        metrics.vcpu_exit(ExitReason::MmioWrite);
        metrics.api_request("actions", false);

        sink.flush_from(&metrics).unwrap();
        metrics.vcpu_exit(ExitReason::MmioWrite);
        reads.store(8, Ordering::Relaxed);
        sink.flush_from(&metrics).unwrap();

        let lines = lines(&path);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["vcpu"]["exit_mmio_write"], 2);
        assert_eq!(lines[0]["api_server"]["actions_count"], 1);
        assert_eq!(lines[0]["block_rootfs"]["read_count"], 5);
        assert_eq!(lines[1]["vcpu"]["exit_mmio_write"], 1);
        assert_eq!(lines[1]["api_server"]["actions_count"], 0);
        assert_eq!(lines[1]["block_rootfs"]["read_count"], 3);
        assert_eq!(lines[1]["block_rootfs"]["mode"], "rw");
        assert_eq!(lines[1]["block_rootfs"]["latency"], 1.5);
        assert!(lines[1]["utc_timestamp_ms"].as_u64().unwrap() > 1_600_000_000_000);
    }

    #[test]
    fn flush_line_starts_with_timestamp_and_is_one_line() {
        let dir = TempDir::new();
        let path = dir.path().join("metrics.json");
        let mut sink = MetricsSink::open(&path).unwrap();

        sink.flush().unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\"utc_timestamp_ms\":"), "{text}");
        assert_eq!(text.matches('\n').count(), 1);
        let line: Value = serde_json::from_str(&text).unwrap();
        for section in ["api_server", "vcpu", "seccomp", "logger"] {
            assert!(line[section].is_object(), "{section} missing: {text}");
        }
    }

    #[test]
    fn subtract_previous_counter_going_down_counts_from_zero() {
        let mut totals = BTreeMap::new();
        let previous = BTreeMap::from([("dev/n".to_string(), 10)]);
        let mut value = json!({"dev": {"n": 4, "neg": -2}});

        subtract_previous(&mut value, &mut String::new(), &previous, &mut totals);

        assert_eq!(value, json!({"dev": {"n": 4, "neg": -2}}));
        assert_eq!(totals.get("dev/n"), Some(&4));
    }

    #[test]
    fn json_line_empty_object_is_valid() {
        let line = json_line(&json!({}), 5).unwrap();
        assert_eq!(line, b"{\"utc_timestamp_ms\":5}\n");
    }

    #[test]
    fn flush_fifo_with_reader_gets_the_line() {
        let dir = TempDir::new();
        let path = dir.path().join("metrics.fifo");
        mkfifo(&path);
        let mut sink = MetricsSink::open(&path).unwrap();
        let mut reader = std::fs::File::open(&path).unwrap();

        sink.flush_from(&Metrics::new()).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = reader.read(&mut buf).unwrap();

        let line: Value = serde_json::from_slice(&buf[..n]).unwrap();
        assert_eq!(line["vcpu"]["exit_hlt"], 0);
    }

    #[test]
    fn flush_full_fifo_drops_line_without_blocking() {
        let dir = TempDir::new();
        let path = dir.path().join("metrics.fifo");
        mkfifo(&path);
        let mut sink = MetricsSink::open(&path).unwrap();
        let mut full = fill_fifo(&path);
        let metrics = std::sync::Arc::new(Metrics::new());
        metrics.vcpu_exit(ExitReason::Hlt);

        let (tx, rx) = mpsc::channel();
        let writer_metrics = metrics.clone();
        std::thread::spawn(move || {
            let result = sink.flush_from(&writer_metrics);
            let _ = tx.send((result.is_ok(), sink));
        });
        let (ok, mut sink) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("flush blocked on a full pipe");

        assert!(ok);
        assert_eq!(metrics.metrics_dropped_count(), 1);
        // Once the pipe is drained, the next line still carries the dropped change.
        let mut drain = vec![0u8; 1 << 20];
        while full.read(&mut drain).is_ok_and(|n| n > 0) {}
        sink.flush_from(&metrics).unwrap();
        let n = full.read(&mut drain).unwrap();
        let line: Value = serde_json::from_slice(&drain[..n]).unwrap();
        assert_eq!(line["vcpu"]["exit_hlt"], 1);
        assert_eq!(line["logger"]["missed_metrics_count"], 1);
    }

    #[test]
    fn open_directory_is_refused_with_path_in_message() {
        let dir = TempDir::new();

        let err = MetricsSink::open(dir.path()).unwrap_err();

        assert!(matches!(err, MetricsError::IsDirectory(_)), "{err:?}");
        assert!(err.to_string().contains(&*dir.path().to_string_lossy()));
    }

    #[test]
    fn open_missing_directory_is_refused_with_advice() {
        let dir = TempDir::new();
        let path = dir.path().join("absent").join("metrics.json");

        let err = MetricsSink::open(&path).unwrap_err();

        assert!(matches!(err, MetricsError::NoParentDirectory(_)), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("absent/metrics.json"), "{message}");
        assert!(message.contains("create it first"), "{message}");
    }
}
