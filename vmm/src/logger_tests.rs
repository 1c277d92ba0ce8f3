//! Tests of the logger.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::mpsc;
use std::time::Duration;

use super::test_util::{fill_fifo, mkfifo, TempDir};
use super::*;

/// 2024-02-29T12:34:56.000000005Z
fn leap_day() -> SystemTime {
    UNIX_EPOCH + Duration::new(1_709_210_096, 5)
}

fn format(style: Style, level: Level, message: &str) -> String {
    let line = format_line(
        style,
        &Record::builder()
            .args(format_args!("{message}"))
            .level(level)
            .module_path(Some("vmm::vcpu"))
            .file(Some("vmm/src/vcpu.rs"))
            .line(Some(42))
            .build(),
        77,
        "cabin-vcpu0",
        leap_day(),
    );
    String::from_utf8(line).unwrap()
}

fn emit(logger: &Logger, level: Level, module: &str, message: &str) {
    logger.log(
        &Record::builder()
            .args(format_args!("{message}"))
            .level(level)
            .module_path(Some(module))
            .build(),
    );
}

fn configured(dir: &TempDir, config: LoggerConfig) -> (Logger, PathBuf) {
    let path = dir.path().join("cabin.log");
    let logger = Logger::new(77);
    logger
        .configure(&LoggerConfig {
            log_path: Some(path.clone()),
            ..config
        })
        .unwrap();
    (logger, path)
}

/// Runs `f` on another thread; fails if it does not finish within 10 s.
fn finishes<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("blocked instead of dropping the line")
}

#[test]
fn utc_time_dates_across_leap_years_are_right() {
    assert_eq!(
        UtcTime::from(leap_day()).nanoseconds().to_string(),
        "2024-02-29T12:34:56.000000005Z"
    );
    let march_2000 = UNIX_EPOCH + Duration::from_secs(951_868_800);
    assert_eq!(
        UtcTime::from(march_2000).seconds().to_string(),
        "2000-03-01T00:00:00Z"
    );
    let end_feb_2100 = UNIX_EPOCH + Duration::from_secs(4_107_542_399);
    assert_eq!(
        UtcTime::from(end_feb_2100).seconds().to_string(),
        "2100-02-28T23:59:59Z"
    );
    assert_eq!(
        UtcTime::from(UNIX_EPOCH).seconds().to_string(),
        "1970-01-01T00:00:00Z"
    );
}

#[test]
fn format_line_startup_style_matches_former_stderr_format() {
    let line = format(Style::Startup, Level::Warn, "disk is slow");
    assert_eq!(line, "[2024-02-29T12:34:56Z WARN ] disk is slow\n");
}

#[test]
fn format_line_configured_without_extras_names_process_and_thread() {
    let style = Style::Configured {
        show_level: false,
        show_origin: false,
    };
    let line = format(style, Level::Info, "booted");
    assert_eq!(
        line,
        "2024-02-29T12:34:56.000000005Z [cabin-77:cabin-vcpu0] booted\n"
    );
}

#[test]
fn format_line_configured_with_level_and_origin_inserts_both() {
    let style = Style::Configured {
        show_level: true,
        show_origin: true,
    };
    let line = format(style, Level::Error, "crash");
    assert_eq!(
        line,
        "2024-02-29T12:34:56.000000005Z [cabin-77:cabin-vcpu0:ERROR:vmm/src/vcpu.rs:42] crash\n"
    );
    let style = Style::Configured {
        show_level: false,
        show_origin: true,
    };
    assert!(
        format(style, Level::Error, "x").contains("[cabin-77:cabin-vcpu0:vmm/src/vcpu.rs:42] x")
    );
}

#[test]
fn format_line_multiline_message_stays_one_line() {
    let line = format(Style::Startup, Level::Warn, "a\nb\r\nc");
    assert_eq!(line.matches('\n').count(), 1, "{line:?}");
    assert!(line.ends_with("a b  c\n"), "{line:?}");
}

#[test]
fn cap_line_long_line_is_cut_and_keeps_newline() {
    let mut line = vec![b'a'; 10];
    line.push(b'\n');
    cap_line(&mut line, 5);
    assert_eq!(line, b"aaaa\n");
    let mut short = b"ok\n".to_vec();
    cap_line(&mut short, 5);
    assert_eq!(short, b"ok\n");
}

#[test]
fn log_level_names_parse_case_insensitively() {
    assert_eq!("Warning".parse::<LogLevel>().unwrap(), LogLevel::Warning);
    assert_eq!("warn".parse::<LogLevel>().unwrap(), LogLevel::Warning);
    assert_eq!("TRACE".parse::<LogLevel>().unwrap(), LogLevel::Trace);
    assert_eq!("off".parse::<LogLevel>().unwrap(), LogLevel::Off);
    let err = "loud".parse::<LogLevel>().unwrap_err();
    assert!(err.to_string().contains("\"loud\""), "{err}");
}

#[test]
fn logger_config_firecracker_body_deserializes() {
    let config: LoggerConfig =
        serde_json::from_str(r#"{"log_path": "/tmp/fc.log", "level": "Warn", "show_level": true}"#)
            .unwrap();
    assert_eq!(config.log_path, Some(PathBuf::from("/tmp/fc.log")));
    assert_eq!(config.level, Some(LogLevel::Warning));
    assert!(config.show_level && !config.show_log_origin);
    assert_eq!(
        serde_json::to_value(LogLevel::Warning).unwrap(),
        serde_json::json!("Warning")
    );
    let unknown = serde_json::from_str::<LoggerConfig>(r#"{"colour": true}"#);
    assert!(unknown.unwrap_err().to_string().contains("colour"));
    let bad_level = serde_json::from_str::<LoggerConfig>(r#"{"level": "Loud"}"#);
    assert!(bad_level.unwrap_err().to_string().contains("Loud"));
}

#[test]
fn logger_file_gets_configured_lines_appended() {
    let dir = TempDir::new();
    let (logger, path) = configured(
        &dir,
        LoggerConfig {
            level: Some(LogLevel::Info),
            show_level: true,
            ..LoggerConfig::default()
        },
    );

    emit(&logger, Level::Info, "vmm::builder", "first");
    emit(&logger, Level::Warn, "vmm::builder", "second");

    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].ends_with(":INFO] first"), "{text}");
    assert!(lines[1].ends_with(":WARN] second"), "{text}");
    assert!(lines[0].contains(" [cabin-77:"), "{text}");
}

#[test]
fn logger_level_filter_drops_more_detailed_records() {
    let dir = TempDir::new();
    let (logger, path) = configured(
        &dir,
        LoggerConfig {
            level: Some(LogLevel::Warning),
            ..LoggerConfig::default()
        },
    );

    emit(&logger, Level::Error, "vmm", "kept error");
    emit(&logger, Level::Warn, "vmm", "kept warning");
    emit(&logger, Level::Info, "vmm", "dropped info");
    emit(&logger, Level::Trace, "vmm", "dropped trace");

    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(!text.contains("dropped"), "{text}");
}

#[test]
fn logger_module_filter_keeps_only_that_module() {
    let dir = TempDir::new();
    let (logger, path) = configured(
        &dir,
        LoggerConfig {
            level: Some(LogLevel::Debug),
            module: Some("vmm::vcpu".into()),
            ..LoggerConfig::default()
        },
    );

    emit(&logger, Level::Info, "vmm::vcpu", "from vcpu");
    emit(&logger, Level::Info, "vmm::builder", "from builder");
    emit(&logger, Level::Info, "devices::serial", "from serial");

    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("from vcpu"), "{text}");
}

#[test]
fn logger_reconfigure_without_path_keeps_file_and_changes_level() {
    let dir = TempDir::new();
    let (logger, path) = configured(
        &dir,
        LoggerConfig {
            level: Some(LogLevel::Error),
            ..LoggerConfig::default()
        },
    );

    emit(&logger, Level::Info, "vmm", "before");
    logger
        .configure(&LoggerConfig {
            level: Some(LogLevel::Info),
            ..LoggerConfig::default()
        })
        .unwrap();
    emit(&logger, Level::Info, "vmm", "after");

    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("after"), "{text}");
}

#[test]
fn logger_fifo_with_reader_gets_whole_lines() {
    let dir = TempDir::new();
    let path = dir.path().join("log.fifo");
    mkfifo(&path);
    let mut reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .unwrap();
    let logger = Logger::new(77);
    logger
        .configure(&LoggerConfig {
            log_path: Some(path.clone()),
            level: Some(LogLevel::Info),
            ..LoggerConfig::default()
        })
        .unwrap();

    emit(&logger, Level::Info, "vmm", "through the pipe");
    let mut text = String::new();
    let _ = reader.read_to_string(&mut text);

    assert!(text.ends_with("] through the pipe\n"), "{text:?}");
}

#[test]
fn logger_full_fifo_without_reader_drops_and_counts_lines() {
    let dir = TempDir::new();
    let path = dir.path().join("log.fifo");
    mkfifo(&path);
    let _full = fill_fifo(&path);
    let logger = Logger::new(77);
    logger
        .configure(&LoggerConfig {
            log_path: Some(path.clone()),
            level: Some(LogLevel::Info),
            ..LoggerConfig::default()
        })
        .unwrap();
    let before = metrics().log_dropped_count();

    let logger = Arc::new(logger);
    finishes(move || {
        for _ in 0..100 {
            emit(&logger, Level::Info, "vmm", "nobody reads this");
        }
    });

    assert!(metrics().log_dropped_count() >= before + 100);
}

const SECCOMP_CHILD_ENV: &str = "CABIN_LOGGER_SECCOMP_CHILD";

/// In the child: logs (to a file and to stderr) and writes a metrics line from a
/// thread confined by the vCPU filter, the strictest one.
#[test]
fn seccomp_child_logs_under_vcpu_filter() {
    let Some(dir) = std::env::var_os(SECCOMP_CHILD_ENV).map(PathBuf::from) else {
        return;
    };
    let logger = Logger::new(std::process::id());
    logger
        .configure(&LoggerConfig {
            log_path: Some(dir.join("cabin.log")),
            level: Some(LogLevel::Trace),
            show_level: true,
            show_log_origin: true,
            module: None,
        })
        .unwrap();
    let mut sink = crate::metrics::MetricsSink::open(&dir.join("metrics.json")).unwrap();
    crate::seccomp::install_sigsys_handler().unwrap();
    let filter = crate::seccomp::Filters::compile()
        .unwrap()
        .program(crate::seccomp::ThreadKind::Vcpu);
    std::thread::Builder::new()
        .name("cabin-vcpu0".into())
        .spawn(move || {
            filter.apply().unwrap();
            emit(&logger, Level::Info, "vmm::vcpu", "confined line");
            emit(&Logger::new(1), Level::Warn, "vmm::vcpu", "confined stderr");
            sink.flush().unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
    // SAFETY: ends the child at once, before the test harness does anything
    // else; nothing is left to flush (files are written with plain write(2)).
    unsafe { libc::_exit(0) };
}

#[test]
fn logging_under_vcpu_seccomp_filter_makes_only_allowed_calls() {
    let dir = TempDir::new();

    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "logger::tests::seccomp_child_logs_under_vcpu_filter",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SECCOMP_CHILD_ENV, dir.path())
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(stderr.contains("WARN ] confined stderr"), "{stderr}");
    let log = fs::read_to_string(dir.path().join("cabin.log")).unwrap();
    assert!(log.contains(":cabin-vcpu0:INFO:"), "{log}");
    assert!(log.ends_with("] confined line\n"), "{log}");
    let metrics = fs::read_to_string(dir.path().join("metrics.json")).unwrap();
    let line: serde_json::Value = serde_json::from_str(&metrics).unwrap();
    assert!(
        line["logger"]["lines_info"].as_u64().unwrap() >= 1,
        "{metrics}"
    );
}

#[test]
fn configure_directory_is_refused_with_path_in_message() {
    let dir = TempDir::new();
    let logger = Logger::new(77);

    let err = logger
        .configure(&LoggerConfig {
            log_path: Some(dir.path().to_path_buf()),
            ..LoggerConfig::default()
        })
        .unwrap_err();

    assert!(matches!(err, LoggerError::IsDirectory(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&*dir.path().to_string_lossy()),
        "{message}"
    );
    assert!(message.contains("named pipe"), "{message}");
}

#[test]
fn configure_missing_directory_is_refused_and_nothing_changes() {
    let dir = TempDir::new();
    let path = dir.path().join("no-such-dir").join("cabin.log");
    let logger = Logger::new(77);

    let err = logger
        .configure(&LoggerConfig {
            log_path: Some(path.clone()),
            level: Some(LogLevel::Trace),
            ..LoggerConfig::default()
        })
        .unwrap_err();

    assert!(matches!(err, LoggerError::NoParentDirectory(_)), "{err:?}");
    assert!(err.to_string().contains("no-such-dir"), "{err}");
    assert!(err.to_string().contains("create it first"), "{err}");
    assert_eq!(logger.current().level, DEFAULT_LEVEL);
    assert!(!path.exists());
}

#[test]
fn configure_unwritable_file_is_refused_with_source() {
    let dir = TempDir::new();
    let path = dir.path().join("read-only.log");
    fs::write(&path, b"").unwrap();
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    // root writes anyway; the check only means something for other users.
    if OpenOptions::new().append(true).open(&path).is_ok() {
        return;
    }
    let logger = Logger::new(77);

    let err = logger
        .configure(&LoggerConfig {
            log_path: Some(path),
            ..LoggerConfig::default()
        })
        .unwrap_err();

    assert!(matches!(err, LoggerError::Open(..)), "{err:?}");
    assert!(
        crate::error_chain(&err).contains("Permission denied"),
        "{err}"
    );
}
