//! `--config-file`: the whole configuration as one JSON document (Firecracker's
//! format, the same document `GET /vm/config` returns), applied over what the command
//! line gave.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::{apply, ConfigChange, VmDocument};
use crate::config::VmConfig;

/// A config file cabin cannot use. Printed with its sources, each is one line naming
/// the file and the field.
#[derive(Debug, Error)]
pub enum ConfigFileError {
    /// The file cannot be read.
    #[error("Cannot read config file {path}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Not JSON (the source gives line and column).
    #[error("Config file {path} is not valid JSON")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// serde_json's complaint, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// JSON, but an unknown field, a missing one or one of the wrong type.
    #[error("Config file {path} does not match cabin's format")]
    Format {
        /// The file.
        path: PathBuf,
        /// The field (`section: field: problem at line L column C`).
        #[source]
        source: serde_json::Error,
    },
    /// A value cabin refuses (a vCPU count out of range, a missing image, ...).
    #[error("Config file {path}: {section}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where in the file (`machine-config`, `drives[1]`, ...).
        section: String,
        /// What is wrong, naming the field.
        message: String,
    },
    /// No kernel in the file nor on the command line.
    #[error("Config file {path} has no boot-source: give its kernel_image_path")]
    NoBootSource {
        /// The file.
        path: PathBuf,
    },
}

/// Reads a config file (Firecracker's `--config-file` format, the same document
/// `GET /vm/config` returns) and applies it over `base` (what the command line gave):
/// machine-config, boot-source, then drives and network interfaces in file order.
pub fn load_config_file(path: &Path, base: VmConfig) -> Result<VmConfig, ConfigFileError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigFileError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    let document: VmDocument = serde_json::from_str(&text).map_err(|source| {
        let path = path.to_owned();
        match source.classify() {
            serde_json::error::Category::Data => ConfigFileError::Format { path, source },
            _ => ConfigFileError::Malformed { path, source },
        }
    })?;
    apply_document(path, document, base)
}

fn apply_document(
    path: &Path,
    document: VmDocument,
    mut config: VmConfig,
) -> Result<VmConfig, ConfigFileError> {
    let invalid = |section: String, message: String| ConfigFileError::Invalid {
        path: path.to_owned(),
        section,
        message,
    };
    if document.boot_source.is_none() && config.kernel.is_none() {
        return Err(ConfigFileError::NoBootSource {
            path: path.to_owned(),
        });
    }
    if let Some(machine) = document.machine_config {
        apply(&mut config, ConfigChange::Machine(machine))
            .map_err(|m| invalid("machine-config".into(), m))?;
    }
    if let Some(boot) = document.boot_source {
        apply(&mut config, ConfigChange::Boot(boot))
            .map_err(|m| invalid("boot-source".into(), m))?;
    }
    let mut seen_root = false;
    for (i, drive) in document.drives.iter().enumerate() {
        let section = format!("drives[{i}]");
        if document.drives[..i]
            .iter()
            .any(|d| d.drive_id == drive.drive_id)
        {
            let message = format!("drive_id '{}' is given twice", drive.drive_id);
            return Err(invalid(section, message));
        }
        if drive.is_root_device && seen_root {
            let message = "is_root_device true on a second drive: only one can be the root device";
            return Err(invalid(section, message.into()));
        }
        seen_root |= drive.is_root_device;
        apply(&mut config, ConfigChange::Drive(drive.clone())).map_err(|m| invalid(section, m))?;
    }
    for (i, net) in document.network_interfaces.iter().enumerate() {
        let section = format!("network-interfaces[{i}]");
        if document.network_interfaces[..i]
            .iter()
            .any(|n| n.iface_id == net.iface_id)
        {
            let message = format!("iface_id '{}' is given twice", net.iface_id);
            return Err(invalid(section, message));
        }
        apply(&mut config, ConfigChange::Net(net.clone())).map_err(|m| invalid(section, m))?;
    }
    let sections = [
        ("logger", document.logger.map(ConfigChange::Logger)),
        ("metrics", document.metrics.map(ConfigChange::Metrics)),
        ("entropy", document.entropy.map(ConfigChange::Entropy)),
        ("serial", document.serial.map(ConfigChange::Serial)),
        ("vsock", document.vsock.map(ConfigChange::Vsock)),
    ];
    for (section, change) in sections {
        if let Some(change) = change {
            apply(&mut config, change).map_err(|m| invalid(section.into(), m))?;
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::model::tests::{base, Scratch};
    use crate::error_chain;

    fn load_text(dir: &Scratch, text: &str) -> Result<VmConfig, ConfigFileError> {
        let file = dir.0.join("vm.json");
        fs::write(&file, text).unwrap();
        load_config_file(&file, base())
    }

    #[test]
    fn load_config_file_errors_name_file_and_field() {
        let dir = Scratch::new("loaderrors");
        let kernel = dir.file("vmlinux");
        let boot = format!(r#""boot-source": {{"kernel_image_path": "{kernel}"}}"#);
        let cases = [
            (format!("{{{boot},"), "is not valid JSON: EOF while parsing"),
            (
                format!(r#"{{{boot}, "machine-config": {{"vcpus": 2, "mem_size_mib": 64}}}}"#),
                "machine-config: unknown field `vcpus`",
            ),
            (
                format!(r#"{{{boot}, "machine-config": {{"vcpu_count": 2}}}}"#),
                "machine-config: missing field `mem_size_mib`",
            ),
            (
                format!(
                    r#"{{{boot}, "machine-config": {{"vcpu_count": true, "mem_size_mib": 64}}}}"#
                ),
                "machine-config: vcpu_count: invalid type: boolean `true`",
            ),
            (
                format!(r#"{{{boot}, "machine-config": {{"vcpu_count": 0, "mem_size_mib": 64}}}}"#),
                "machine-config: vcpu_count 0",
            ),
            (
                format!(r#"{{{boot}, "balloon": {{}}}}"#),
                "unknown field `balloon`",
            ),
            (
                format!(
                    r#"{{{boot}, "drives": [{{"drive_id": "a", "path_on_host": "/nonexistent", "is_root_device": true}}]}}"#
                ),
                "drives[0]: path_on_host /nonexistent does not exist",
            ),
            ("{}".to_owned(), "has no boot-source"),
        ];
        for (text, expected) in cases {
            let err = load_text(&dir, &text).unwrap_err();
            let line = error_chain(&err);
            assert!(line.contains("vm.json"), "{line}");
            assert!(line.contains(expected), "{expected:?} not in {line:?}");
            assert!(!line.contains('\n'), "{line}");
        }
        let json = dir.0.join("vm.json");
        let syntax = load_text(&dir, "{\n  \"boot-source\": }").unwrap_err();
        assert!(error_chain(&syntax).contains("line 2 column"), "{json:?}");
    }

    #[test]
    fn load_config_file_refuses_duplicates_and_two_roots() {
        let dir = Scratch::new("loaddup");
        let (kernel, a, b) = (dir.file("vmlinux"), dir.file("a.img"), dir.file("b.img"));
        let boot = format!(r#""boot-source": {{"kernel_image_path": "{kernel}"}}"#);
        let two = |id2: &str, root2: bool| {
            format!(
                r#"{{{boot}, "drives": [
                {{"drive_id": "a", "path_on_host": "{a}", "is_root_device": true}},
                {{"drive_id": "{id2}", "path_on_host": "{b}", "is_root_device": {root2}}}]}}"#
            )
        };
        let err = error_chain(&load_text(&dir, &two("a", false)).unwrap_err());
        assert!(
            err.contains("drives[1]: drive_id 'a' is given twice"),
            "{err}"
        );
        let err = error_chain(&load_text(&dir, &two("b", true)).unwrap_err());
        assert!(err.contains("drives[1]: is_root_device"), "{err}");
        let ok = load_text(&dir, &two("b", false)).unwrap();
        assert_eq!(ok.disks.len(), 2);
    }

    #[test]
    fn load_config_file_unreadable_names_file() {
        let err = load_config_file(Path::new("/nonexistent/vm.json"), base()).unwrap_err();
        let line = error_chain(&err);
        assert!(
            line.starts_with("Cannot read config file /nonexistent/vm.json: No such file"),
            "{line}"
        );
    }

    #[test]
    fn load_config_file_keeps_command_line_values_it_does_not_set() {
        let dir = Scratch::new("loadbase");
        let kernel = dir.file("vmlinux");
        let mut start = base();
        start.vcpus = 3;
        start.cmdline = "from the command line".into();
        let file = dir.0.join("vm.json");
        fs::write(
            &file,
            format!(r#"{{"boot-source": {{"kernel_image_path": "{kernel}"}}}}"#),
        )
        .unwrap();
        let loaded = load_config_file(&file, start).unwrap();
        assert_eq!(loaded.vcpus, 3);
        assert_eq!(loaded.cmdline, "from the command line");
        assert_eq!(loaded.kernel, Some(PathBuf::from(kernel)));
    }
}
