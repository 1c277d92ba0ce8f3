//! `PUT /snapshot/create` and `PUT /snapshot/load` bodies, in Firecracker's shapes.

use std::path::PathBuf;

use serde::Deserialize;

/// Which memory a snapshot writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum SnapshotType {
    /// All of guest RAM.
    #[default]
    Full,
    /// Only the pages written since the last snapshot (needs `track_dirty_pages`).
    Diff,
}

/// `PUT /snapshot/create`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreate {
    /// Where the state file goes.
    pub snapshot_path: PathBuf,
    /// Where the memory file goes.
    pub mem_file_path: PathBuf,
    /// Full (the default) or Diff.
    #[serde(default)]
    pub snapshot_type: SnapshotType,
    /// Firecracker's former format-version field; accepted and ignored.
    #[serde(default)]
    pub version: Option<String>,
}

/// How guest memory is backed on load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum BackendType {
    /// A memory file, mapped privately.
    File,
    /// A userfaultfd handler process (not supported).
    Uffd,
}

/// `mem_backend` of `PUT /snapshot/load`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemBackend {
    /// File or Uffd.
    pub backend_type: BackendType,
    /// The memory file (or, for Uffd, the handler's socket).
    pub backend_path: PathBuf,
}

/// One entry of `network_overrides`: the restored interface uses another TAP.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverride {
    /// The interface's id in the snapshot (`eth0`... or the id it was given).
    pub iface_id: String,
    /// The TAP to use instead.
    pub host_dev_name: String,
}

/// `PUT /snapshot/load`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLoad {
    /// The state file.
    pub snapshot_path: PathBuf,
    /// The memory backend.
    #[serde(default)]
    pub mem_backend: Option<MemBackend>,
    /// The older form of `mem_backend` (a memory file).
    #[serde(default)]
    pub mem_file_path: Option<PathBuf>,
    /// Log dirty pages from the start (for a later diff snapshot).
    #[serde(default)]
    pub track_dirty_pages: bool,
    /// Firecracker's former name for `track_dirty_pages`.
    #[serde(default)]
    pub enable_diff_snapshots: bool,
    /// Run the VM at once (else it stays Paused until `PATCH /vm`).
    #[serde(default)]
    pub resume_vm: bool,
    /// Other TAPs for the snapshot's interfaces.
    #[serde(default)]
    pub network_overrides: Vec<NetworkOverride>,
    /// Another Unix socket for the snapshot's vsock device.
    #[serde(default)]
    pub vsock_override: Option<super::VsockOverride>,
}

/// A load request checked: one memory file, no Uffd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    /// The state file.
    pub snapshot_path: PathBuf,
    /// The memory file.
    pub mem_file: PathBuf,
    /// Log dirty pages.
    pub track_dirty_pages: bool,
    /// Run at once.
    pub resume_vm: bool,
    /// TAP overrides.
    pub network_overrides: Vec<NetworkOverride>,
    /// TAPs for the snapshot's interfaces in order (`cabin run --restore --net`).
    pub positional_taps: Vec<String>,
    /// The Unix socket the restored vsock device listens on instead of the
    /// snapshot's.
    pub vsock_override: Option<PathBuf>,
}

impl SnapshotLoad {
    /// Checks that exactly one memory file is given and it is a file backend.
    pub fn plan(self) -> Result<LoadPlan, String> {
        let mem_file = match (self.mem_backend, self.mem_file_path) {
            (Some(_), Some(_)) => {
                return Err("Give either mem_backend or mem_file_path, not both".into())
            }
            (None, None) => {
                return Err(
                    "No memory file: give mem_backend {backend_type: File, backend_path} (or mem_file_path)"
                        .into(),
                )
            }
            (Some(backend), None) => match backend.backend_type {
                BackendType::File => backend.backend_path,
                BackendType::Uffd => {
                    return Err("mem_backend backend_type Uffd is not supported by cabin: use File (cabin maps the memory file copy-on-write, which needs no page-fault handler)".into())
                }
            },
            (None, Some(path)) => path,
        };
        Ok(LoadPlan {
            snapshot_path: self.snapshot_path,
            mem_file,
            track_dirty_pages: self.track_dirty_pages || self.enable_diff_snapshots,
            resume_vm: self.resume_vm,
            network_overrides: self.network_overrides,
            positional_taps: Vec::new(),
            vsock_override: self.vsock_override.map(|o| o.uds_path),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str) -> Result<LoadPlan, String> {
        serde_json::from_str::<SnapshotLoad>(json)
            .map_err(|e| e.to_string())?
            .plan()
    }

    #[test]
    fn load_takes_both_memory_forms_and_refuses_uffd() {
        let plan = load(r#"{"snapshot_path":"s","mem_backend":{"backend_type":"File","backend_path":"m"},"resume_vm":true,"network_overrides":[{"iface_id":"eth0","host_dev_name":"tap9"}]}"#).unwrap();
        assert_eq!(plan.mem_file, PathBuf::from("m"));
        assert!(plan.resume_vm);
        assert_eq!(plan.network_overrides[0].host_dev_name, "tap9");
        let plan =
            load(r#"{"snapshot_path":"s","mem_file_path":"m","enable_diff_snapshots":true}"#)
                .unwrap();
        assert!(plan.track_dirty_pages);
        let err = load(
            r#"{"snapshot_path":"s","mem_backend":{"backend_type":"Uffd","backend_path":"u"}}"#,
        )
        .unwrap_err();
        assert!(err.contains("Uffd is not supported"), "{err}");
        assert!(load(r#"{"snapshot_path":"s"}"#)
            .unwrap_err()
            .contains("No memory file"));
        assert!(load(r#"{"snapshot_path":"s","mem_file_path":"m","mem_backend":{"backend_type":"File","backend_path":"m"}}"#)
            .unwrap_err()
            .contains("not both"));
        assert!(
            load(r#"{"snapshot_path":"s","mem_file_path":"m","bogus":1}"#)
                .unwrap_err()
                .contains("bogus")
        );
    }

    #[test]
    fn create_defaults_to_full() {
        let create: SnapshotCreate =
            serde_json::from_str(r#"{"snapshot_path":"s","mem_file_path":"m"}"#).unwrap();
        assert_eq!(create.snapshot_type, SnapshotType::Full);
        let create: SnapshotCreate = serde_json::from_str(
            r#"{"snapshot_path":"s","mem_file_path":"m","snapshot_type":"Diff"}"#,
        )
        .unwrap();
        assert_eq!(create.snapshot_type, SnapshotType::Diff);
    }
}
