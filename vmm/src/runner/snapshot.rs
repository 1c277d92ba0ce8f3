//! The event loop's side of snapshots: writing one of the paused VM, and starting
//! the VM from one instead of booting it.

use std::time::Instant;

use event_manager::EventOps;
use log::info;

use super::running::Start;
use super::{Controller, RunError};
use crate::api::model::check_vsock;
use crate::api::model::snapshot::{LoadPlan, SnapshotCreate, SnapshotType};
use crate::api::model::{check_output_path, iface_id_of};
use crate::api::ApiResponse;
use crate::config::VmConfig;
use crate::error_chain;
use crate::snapshot::memory::{write_memory, Pages};
use crate::snapshot::restore::restore_vm;
use crate::snapshot::Snapshot;

fn refused(message: String) -> ApiResponse {
    ApiResponse::Error {
        status: 400,
        message,
    }
}

impl Controller {
    /// Writes the paused VM's state and memory files.
    pub(super) fn create_snapshot(
        &mut self,
        params: &SnapshotCreate,
    ) -> Result<ApiResponse, ApiResponse> {
        let tracking = self.config.machine.track_dirty_pages;
        if params.snapshot_type == SnapshotType::Diff && !tracking {
            return Err(refused(
                "A Diff snapshot needs dirty-page tracking: set track_dirty_pages in PUT /machine-config before InstanceStart, or in PUT /snapshot/load".into(),
            ));
        }
        if params.snapshot_path == params.mem_file_path {
            return Err(refused(
                "snapshot_path and mem_file_path are the same file: give two paths".into(),
            ));
        }
        for (what, path) in [
            ("snapshot_path", &params.snapshot_path),
            ("mem_file_path", &params.mem_file_path),
        ] {
            check_output_path(what, &path.to_string_lossy()).map_err(refused)?;
        }
        let vm = self.vm.as_ref().ok_or_else(super::no_vm)?;
        let started = Instant::now();
        let snapshot = vm.snapshot(&self.config).map_err(|e| ApiResponse::Error {
            status: 500,
            message: format!("Cannot read the VM's state: {e}"),
        })?;
        let pages = match params.snapshot_type {
            SnapshotType::Full => Pages::All,
            SnapshotType::Diff => Pages::Dirty,
        };
        let mem_bytes = write_memory(&vm.vm_fd, &vm.mem, &params.mem_file_path, pages, tracking)
            .map_err(|e| refused(error_chain(&e)))?;
        let state_bytes = snapshot
            .write(&params.snapshot_path)
            .map_err(|e| refused(error_chain(&e)))?;
        info!(
            "{:?} snapshot in {} ms: state {} ({state_bytes} bytes), memory {} ({mem_bytes} bytes of pages written)",
            params.snapshot_type,
            started.elapsed().as_millis(),
            params.snapshot_path.display(),
            params.mem_file_path.display(),
        );
        Ok(ApiResponse::Done)
    }

    /// Builds the VM from a snapshot and starts its vCPUs, paused unless the plan
    /// resumes it. `ops` is the event loop's, when it runs already.
    pub(super) fn load_snapshot(
        &mut self,
        plan: &LoadPlan,
        ops: Option<&mut EventOps>,
    ) -> Result<(), RunError> {
        let load_err = |message: String| RunError::Restore(message);
        if let Some(kernel) = &self.config.kernel {
            return Err(load_err(format!(
                "This cabin is configured to boot {}: load a snapshot into a cabin started with only --api-sock (and logger or metrics)",
                kernel.display()
            )));
        }
        let started = Instant::now();
        let snapshot =
            Snapshot::read(&plan.snapshot_path).map_err(|e| load_err(error_chain(&e)))?;
        let config = self.restored_config(&snapshot, plan).map_err(load_err)?;
        let built = restore_vm(&snapshot, &config, &plan.mem_file)
            .map_err(|e| load_err(error_chain(&e)))?;
        self.config = config;
        self.start_built(built, Start::Restored)?;
        info!(
            "restored {} in {} ms",
            plan.snapshot_path.display(),
            started.elapsed().as_millis()
        );
        if plan.resume_vm {
            if let Some(vm) = self.vm.as_mut() {
                vm.resume(ops);
                self.state = crate::api::VmState::Running;
            }
        }
        Ok(())
    }

    /// The snapshot's configuration with this process's logger, metrics and serial
    /// output, the plan's dirty-page tracking and its TAPs.
    fn restored_config(&self, snapshot: &Snapshot, plan: &LoadPlan) -> Result<VmConfig, String> {
        let mut config = snapshot.config.clone();
        config.logger = self.config.logger.clone();
        config.metrics_path = self.config.metrics_path.clone();
        config.serial_out = self.config.serial_out.clone();
        config.machine.track_dirty_pages = plan.track_dirty_pages;
        if plan.positional_taps.len() > config.nets.len() {
            return Err(format!(
                "{} TAPs given, but the snapshot's VM has {} network interfaces",
                plan.positional_taps.len(),
                config.nets.len()
            ));
        }
        for (net, tap) in config.nets.iter_mut().zip(&plan.positional_taps) {
            net.tap = tap.clone();
        }
        for change in &plan.network_overrides {
            let ids: Vec<String> = config
                .nets
                .iter()
                .enumerate()
                .map(|(i, net)| iface_id_of(i, net))
                .collect();
            let Some(index) = ids.iter().position(|id| *id == change.iface_id) else {
                return Err(format!(
                    "network_overrides: the snapshot has no interface '{}' (it has: {})",
                    change.iface_id,
                    if ids.is_empty() {
                        "none".to_owned()
                    } else {
                        ids.join(", ")
                    }
                ));
            };
            config.nets[index].tap = change.host_dev_name.clone();
        }
        if let Some(path) = &plan.vsock_override {
            let Some(vsock) = &mut config.vsock else {
                return Err("vsock_override: the snapshot's VM has no vsock device".into());
            };
            let checked = check_vsock(vsock.guest_cid, &path.to_string_lossy())
                .map_err(|e| format!("vsock_override: {e}"))?;
            vsock.uds_path = checked.uds_path;
        }
        Ok(config)
    }
}
