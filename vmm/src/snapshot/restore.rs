//! Building a VM from a snapshot: the same devices a cold boot creates, from the
//! snapshot's configuration, then every saved state written back before any vCPU
//! runs. Guest RAM is the memory file, mapped privately.

use std::path::Path;

use arch::layout;
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use linux_loader::cmdline::Cmdline;
use thiserror::Error;

use super::cpu::{missing_cpu_features, KvmCallError, RestoreCpuError};
use super::memory::{map_memory, MemoryError};
use super::Snapshot;
use crate::builder::{
    attach_devices, create_vm, host_limits, ioctl, msr_indices, register_guest_memory, BuildError,
    BuiltVm,
};
use crate::config::{ConfigError, VmConfig};
use crate::kvm::open_kvm;

/// Why a snapshot could not be restored.
#[derive(Debug, Error)]
pub enum RestoreError {
    /// The VM (KVM, devices, disks, TAPs) could not be set up.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A disk of the snapshot's is missing or unusable.
    #[error("Cannot use the snapshot's disks (restore needs each at the path it had when the snapshot was taken)")]
    Disks(#[source] ConfigError),
    /// The memory file is unusable.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The snapshot does not describe a VM cabin makes.
    #[error("The snapshot is inconsistent: {0}")]
    Inconsistent(String),
    /// The host's CPU lacks what the guest saw.
    #[error("This host's CPU (as KVM offers it) lacks {0}, which the snapshot's guest saw and may use: restore on a host with the same CPU features")]
    CpuFeatures(String),
    /// KVM refused the VM's saved state.
    #[error("Cannot restore the VM's interrupt controllers and clocks")]
    Vm(#[source] KvmCallError),
    /// KVM refused a vCPU's saved state.
    #[error("Cannot restore vCPU {0}")]
    Vcpu(usize, #[source] RestoreCpuError),
    /// A device refused its saved state.
    #[error("Cannot restore the {0}")]
    Device(String, #[source] devices::snapshot::RestoreError),
}

/// Builds the VM `snapshot` describes, configured by `config` (the snapshot's
/// configuration with the caller's overrides: TAPs, dirty-page tracking), with
/// guest RAM from `mem_file`.
pub fn restore_vm(
    snapshot: &Snapshot,
    config: &VmConfig,
    mem_file: &Path,
) -> Result<BuiltVm, RestoreError> {
    let inconsistent = |what: String| RestoreError::Inconsistent(what);
    config.validate_disks().map_err(RestoreError::Disks)?;
    let kvm = open_kvm().map_err(BuildError::from)?;
    let limits = host_limits(&kvm)?;
    config.validate_machine(&limits).map_err(BuildError::from)?;
    let vcpu_count = usize::try_from(config.vcpus).unwrap_or(usize::MAX);
    if snapshot.vcpus.len() != vcpu_count {
        return Err(inconsistent(format!(
            "{} vCPU states for {} vCPUs",
            snapshot.vcpus.len(),
            config.vcpus
        )));
    }
    let expected = arch::arch_memory_regions(config.mem_size_bytes());
    let layout_matches = expected.len() == snapshot.memory.regions.len()
        && expected
            .iter()
            .zip(&snapshot.memory.regions)
            .all(|((addr, len), (start, size))| addr.0 == *start && *len as u64 == *size);
    if !layout_matches {
        return Err(inconsistent(format!(
            "its memory layout is not that of {} MiB",
            config.mem_size_mib
        )));
    }
    // What this host would give each vCPU on a cold boot, to compare with what the
    // snapshot's guest was given.
    let mut supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?;
    if kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer) {
        arch::cpuid::enable_tsc_deadline(&mut supported);
    }
    let count = u8::try_from(config.vcpus).unwrap_or(u8::MAX);
    for (index, state) in snapshot.vcpus.iter().enumerate() {
        let mut here = supported.clone();
        let index = u8::try_from(index).unwrap_or(u8::MAX);
        arch::cpuid::setup_cpuid(&mut here, index, count, config.machine.smt)
            .map_err(|e| BuildError::Cpuid(u32::from(index), e))?;
        if let Some(missing) = missing_cpu_features(&state.cpuid, here.as_slice()) {
            return Err(RestoreError::CpuFeatures(missing));
        }
    }

    let vm_fd = create_vm(&kvm)?;
    let mem = map_memory(mem_file, &snapshot.memory)?;
    register_guest_memory(&vm_fd, &mem, config.machine.track_dirty_pages)?;
    snapshot.vm.restore(&vm_fd).map_err(RestoreError::Vm)?;

    // The command line is the guest's already; devices are announced on a scratch one.
    let mut scratch = Cmdline::new(layout::CMDLINE_MAX_SIZE)
        .map_err(|e| BuildError::Loader(crate::loader::LoaderError::CmdlineInvalid(e)))?;
    let devices = attach_devices(config, &vm_fd, &mem, &mut scratch)?;
    if devices.manager.slots.len() != snapshot.devices.len() {
        return Err(inconsistent(format!(
            "it has {} virtio devices, its configuration makes {}",
            snapshot.devices.len(),
            devices.manager.slots.len()
        )));
    }
    let legacy = &devices.legacy;
    let device_err = |name: &str| {
        let name = name.to_owned();
        move |e| RestoreError::Device(name, e)
    };
    crate::runner::lock(&legacy.serial)
        .restore(&snapshot.serial)
        .map_err(device_err("serial port"))?;
    crate::runner::lock(&legacy.i8042)
        .restore(&snapshot.i8042)
        .map_err(device_err("keyboard controller"))?;
    crate::runner::lock(&legacy.acpi_pm)
        .restore(&snapshot.acpi_pm)
        .map_err(device_err("ACPI power device"))?;
    for (slot, state) in devices.manager.slots.iter().zip(&snapshot.devices) {
        crate::runner::lock(&slot.transport)
            .restore(state)
            .map_err(device_err(&slot.name))?;
    }

    let vcpus = snapshot
        .vcpus
        .iter()
        .enumerate()
        .map(|(index, state)| {
            let fd = vm_fd
                .create_vcpu(index as u64)
                .map_err(ioctl("KVM_CREATE_VCPU"))?;
            state
                .restore(&fd)
                .map_err(|e| RestoreError::Vcpu(index, e))?;
            Ok(fd)
        })
        .collect::<Result<Vec<_>, RestoreError>>()?;
    Ok(BuiltVm {
        vm_fd,
        mem,
        pio: std::sync::Arc::new(devices.pio),
        mmio: std::sync::Arc::new(devices.mmio),
        legacy: devices.legacy,
        devices: devices.manager,
        console_input: devices.console_input,
        vcpus,
        cpuids: snapshot.vcpus.iter().map(|v| v.cpuid.clone()).collect(),
        cmdline: String::new(),
        disks: devices.disks,
        nets: devices.nets,
        msr_indices: msr_indices(&kvm)?,
    })
}
