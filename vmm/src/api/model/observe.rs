//! The bodies of `PUT /logger`, `PUT /metrics`, `PUT /entropy` and `PUT /serial`, and
//! their checks. Opening the log and metrics files is the VMM thread's job (it
//! answers 400 when that fails); here only what can be said without opening them.

use std::fs;
use std::path::{Path, PathBuf};

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};

use super::limits::RateLimiter;
use super::named;
use crate::logger::{LogLevel, LoggerConfig};

/// `PUT /logger`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    /// A file (appended to) or a named pipe; absent: the log stays where it is.
    #[serde(
        default,
        deserialize_with = "de_log_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_path: Option<String>,
    /// `Error`, `Warning`, `Info`, `Debug`, `Trace` or `Off`; absent: `Info`.
    #[serde(
        default,
        deserialize_with = "de_level",
        skip_serializing_if = "Option::is_none"
    )]
    pub level: Option<LogLevel>,
    /// Write each line's level.
    #[serde(
        default,
        deserialize_with = "de_show_level",
        skip_serializing_if = "Option::is_none"
    )]
    pub show_level: Option<bool>,
    /// Write each line's source file and line.
    #[serde(
        default,
        deserialize_with = "de_show_log_origin",
        skip_serializing_if = "Option::is_none"
    )]
    pub show_log_origin: Option<bool>,
    /// Only lines from modules whose path starts with this.
    #[serde(
        default,
        deserialize_with = "de_module",
        skip_serializing_if = "Option::is_none"
    )]
    pub module: Option<String>,
}

/// `PUT /metrics`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// A file (appended to) or a named pipe for the JSON lines.
    #[serde(deserialize_with = "de_metrics_path")]
    pub metrics_path: String,
}

/// `PUT /entropy`: a virtio-rng device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entropy {
    /// Limits on requests (ops) and bytes of entropy (bandwidth).
    #[serde(
        default,
        deserialize_with = "de_rate_limiter",
        skip_serializing_if = "Option::is_none"
    )]
    pub rate_limiter: Option<RateLimiter>,
}

/// `PUT /serial`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Serial {
    /// A file (appended to) or named pipe that gets the guest's serial output instead
    /// of cabin's stdout; absent: stdout.
    #[serde(
        default,
        deserialize_with = "de_serial_out_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub serial_out_path: Option<String>,
    /// Not supported by cabin: refused.
    #[serde(
        default,
        deserialize_with = "de_rate_limiter",
        skip_serializing_if = "Option::is_none"
    )]
    pub rate_limiter: Option<RateLimiter>,
}

fn de_log_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    named(d, "log_path")
}
fn de_level<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LogLevel>, D::Error> {
    named(d, "level")
}
fn de_show_level<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    named(d, "show_level")
}
fn de_show_log_origin<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    named(d, "show_log_origin")
}
fn de_module<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    named(d, "module")
}
fn de_metrics_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    named(d, "metrics_path")
}
fn de_rate_limiter<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RateLimiter>, D::Error> {
    named(d, "rate_limiter")
}
fn de_serial_out_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    named(d, "serial_out_path")
}

/// A file cabin will write: not empty, not a directory, in a directory that exists.
pub fn check_output_path(field: &str, path: &str) -> Result<PathBuf, String> {
    if path.is_empty() {
        return Err(format!("{field} is empty"));
    }
    let path = Path::new(path);
    if path.is_dir() {
        return Err(format!(
            "{field} {} is a directory: give a file or a named pipe",
            path.display()
        ));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !fs::metadata(parent).is_ok_and(|m| m.is_dir()) {
        return Err(format!(
            "{field} {}: directory {} does not exist; create it first",
            path.display(),
            parent.display()
        ));
    }
    Ok(path.to_owned())
}

/// The logger settings of a `PUT /logger`; Firecracker's default level is Info.
pub fn check_logger(body: &Logger) -> Result<LoggerConfig, String> {
    let log_path = body
        .log_path
        .as_deref()
        .map(|p| check_output_path("log_path", p))
        .transpose()?;
    Ok(LoggerConfig {
        log_path,
        level: Some(body.level.unwrap_or(LogLevel::Info)),
        show_level: body.show_level.unwrap_or(false),
        show_log_origin: body.show_log_origin.unwrap_or(false),
        module: body.module.clone(),
    })
}

/// The body form of the logger settings.
pub fn logger_body(config: &LoggerConfig) -> Logger {
    Logger {
        log_path: config
            .log_path
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned()),
        level: config.level,
        show_level: Some(config.show_level),
        show_log_origin: Some(config.show_log_origin),
        module: config.module.clone(),
    }
}

/// The serial output file of a `PUT /serial`.
pub fn check_serial(body: &Serial) -> Result<Option<PathBuf>, String> {
    if body.rate_limiter.is_some() {
        return Err(
            "rate_limiter on the serial console is not supported by cabin: leave it out".into(),
        );
    }
    body.serial_out_path
        .as_deref()
        .map(|p| check_output_path("serial_out_path", p))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_output_path_refuses_directories_and_missing_parents() {
        let dir = std::env::temp_dir();
        let message = check_output_path("metrics_path", dir.to_str().unwrap()).unwrap_err();
        assert!(message.contains("is a directory"), "{message}");
        let message = check_output_path("log_path", "/nonexistent-dir/cabin.log").unwrap_err();
        assert_eq!(
            message,
            "log_path /nonexistent-dir/cabin.log: directory /nonexistent-dir does not exist; create it first"
        );
        assert!(check_output_path("log_path", "").is_err());
        let file = dir.join("cabin-observe-test.log");
        assert_eq!(
            check_output_path("log_path", file.to_str().unwrap()).unwrap(),
            file
        );
    }

    #[test]
    fn logger_body_defaults_to_info_and_bad_types_name_the_field() {
        let body: Logger = serde_json::from_str(r#"{"show_level": true}"#).unwrap();
        let config = check_logger(&body).unwrap();
        assert_eq!(config.level, Some(LogLevel::Info));
        assert!(config.show_level && !config.show_log_origin);
        let err = serde_json::from_str::<Logger>(r#"{"show_level": "yes"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("show_level: invalid type"), "{err}");
        let err = serde_json::from_str::<Logger>(r#"{"level": "Loud"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("level: "), "{err}");
    }

    #[test]
    fn check_serial_refuses_a_rate_limiter() {
        let body: Serial =
            serde_json::from_str(r#"{"rate_limiter": {"ops": {"size": 1, "refill_time": 1}}}"#)
                .unwrap();
        assert!(check_serial(&body).unwrap_err().contains("not supported"));
    }
}
