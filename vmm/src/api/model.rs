//! The JSON bodies of the API and of `--config-file`, with Firecracker's field names, and
//! the pure functions that apply them to a [`VmConfig`].
//!
//! Every body refuses unknown fields. A field of the wrong type is reported with its
//! name (`vcpu_count: invalid type: string "2", expected u32`), a missing or unknown
//! field in serde's words (``missing field `vcpu_count` ``). Values are checked by
//! [`apply`], whose messages name the field and the value.

use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use crate::cli::parse_mac;
use crate::config::{
    DiskConfig, EntropyConfig, HugePages, NetConfig, VmConfig, DISK_ID_MAX_LEN, MIN_MEM_MIB,
};
use devices::virtio::block::CacheType;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

mod document;
mod file;
mod limits;
mod observe;
mod patch;
pub mod snapshot;
mod vsock;

pub use document::to_document;
pub use file::{load_config_file, ConfigFileError};
pub use limits::{check_rate_limiter, RateLimiter, TokenBucket};
pub use observe::{check_output_path, Entropy, Logger, Metrics, Serial};
pub use patch::{check_drive_patch, check_net_patch, DriveUpdate, NetUpdate};
pub use vsock::{check_vsock, Vsock, VsockOverride, MIN_GUEST_CID};

/// Largest `vcpu_count`: as many processors as cabin's MP table describes.
pub const MAX_VCPUS: u32 = arch::layout::MAX_SUPPORTED_CPUS as u32;
/// Longest host interface name (IFNAMSIZ without its NUL).
pub const HOST_DEV_NAME_MAX_LEN: usize = 15;
/// The `app_name` of [`InstanceInfo`].
pub const APP_NAME: &str = "cabin";

/// `PUT/GET /machine-config`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// Number of vCPUs, 1 to [`MAX_VCPUS`].
    #[serde(deserialize_with = "de_vcpu_count")]
    pub vcpu_count: u32,
    /// Guest memory in MiB, at least [`MIN_MEM_MIB`].
    #[serde(deserialize_with = "de_mem_size_mib")]
    pub mem_size_mib: u64,
    /// Simultaneous multithreading: two threads per core in the guest's topology.
    #[serde(
        default,
        deserialize_with = "de_smt",
        skip_serializing_if = "Option::is_none"
    )]
    pub smt: Option<bool>,
    /// KVM logs the pages the guest writes (for diff snapshots).
    #[serde(
        default,
        deserialize_with = "de_track_dirty_pages",
        skip_serializing_if = "Option::is_none"
    )]
    pub track_dirty_pages: Option<bool>,
    /// `None` or `2M`: guest RAM on 2 MiB huge pages.
    #[serde(
        default,
        deserialize_with = "de_huge_pages",
        skip_serializing_if = "Option::is_none"
    )]
    pub huge_pages: Option<HugePagesBody>,
    /// A CPU template; cabin accepts only `None` (the host's CPUID as KVM offers it).
    #[serde(
        default,
        deserialize_with = "de_cpu_template",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_template: Option<String>,
}

/// `PATCH /machine-config`: any subset of [`MachineConfig`]'s fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigPatch {
    /// See [`MachineConfig`].
    #[serde(default, deserialize_with = "de_opt_vcpu_count")]
    pub vcpu_count: Option<u32>,
    /// See [`MachineConfig`].
    #[serde(default, deserialize_with = "de_opt_mem_size_mib")]
    pub mem_size_mib: Option<u64>,
    /// See [`MachineConfig`].
    #[serde(default, deserialize_with = "de_smt")]
    pub smt: Option<bool>,
    /// See [`MachineConfig`].
    #[serde(default, deserialize_with = "de_track_dirty_pages")]
    pub track_dirty_pages: Option<bool>,
    /// See [`MachineConfig`].
    #[serde(default, deserialize_with = "de_huge_pages")]
    pub huge_pages: Option<HugePagesBody>,
    /// See [`MachineConfig`].
    #[serde(default, deserialize_with = "de_cpu_template")]
    pub cpu_template: Option<String>,
}

/// Firecracker's `huge_pages` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePagesBody {
    /// Ordinary pages.
    None,
    /// 2 MiB huge pages.
    #[serde(rename = "2M")]
    Size2M,
}

/// `PUT /boot-source`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    /// Host path of the kernel (ELF vmlinux or bzImage).
    #[serde(deserialize_with = "de_kernel_image_path")]
    pub kernel_image_path: String,
    /// Host path of the initramfs; absent means none.
    #[serde(
        default,
        deserialize_with = "de_initrd_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub initrd_path: Option<String>,
    /// Kernel command line; absent keeps the current one.
    #[serde(
        default,
        deserialize_with = "de_boot_args",
        skip_serializing_if = "Option::is_none"
    )]
    pub boot_args: Option<String>,
}

/// `PUT /drives/{drive_id}`: a virtio block device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    /// Name of the drive; also the serial the guest reads (at most 20 bytes).
    #[serde(deserialize_with = "de_drive_id")]
    pub drive_id: String,
    /// Host path of the raw image file or block device.
    #[serde(deserialize_with = "de_path_on_host")]
    pub path_on_host: String,
    /// The root device becomes the first drive (/dev/vda).
    #[serde(deserialize_with = "de_is_root_device")]
    pub is_root_device: bool,
    /// The guest may only read; absent means false.
    #[serde(
        default,
        deserialize_with = "de_is_read_only",
        skip_serializing_if = "Option::is_none"
    )]
    pub is_read_only: Option<bool>,
    /// Partition UUID of the root filesystem: `root=PARTUUID=...` instead of
    /// `root=/dev/vda` (only with `is_root_device`).
    #[serde(
        default,
        deserialize_with = "de_partuuid",
        skip_serializing_if = "Option::is_none"
    )]
    pub partuuid: Option<String>,
    /// `Unsafe` (the default: flushes are not offered) or `Writeback` (flushes reach
    /// the disk).
    #[serde(
        default,
        deserialize_with = "de_cache_type",
        skip_serializing_if = "Option::is_none"
    )]
    pub cache_type: Option<CacheTypeBody>,
    /// `Sync` only; `Async` (io_uring) is refused.
    #[serde(
        default,
        deserialize_with = "de_io_engine",
        skip_serializing_if = "Option::is_none"
    )]
    pub io_engine: Option<IoEngine>,
    /// Limits on requests (ops) and bytes (bandwidth).
    #[serde(
        default,
        deserialize_with = "de_rate_limiter",
        skip_serializing_if = "Option::is_none"
    )]
    pub rate_limiter: Option<RateLimiter>,
    /// A vhost-user socket: not supported, refused.
    #[serde(
        default,
        deserialize_with = "de_socket",
        skip_serializing_if = "Option::is_none"
    )]
    pub socket: Option<String>,
}

/// `PATCH /drives/{drive_id}` on a running VM: a new backing file (the guest sees
/// its size) and/or a new rate limiter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrivePatch {
    /// Which drive.
    #[serde(deserialize_with = "de_drive_id")]
    pub drive_id: String,
    /// The new backing file.
    #[serde(default, deserialize_with = "de_opt_path_on_host")]
    pub path_on_host: Option<String>,
    /// The new limits.
    #[serde(default, deserialize_with = "de_rate_limiter")]
    pub rate_limiter: Option<RateLimiter>,
}

/// Firecracker's `cache_type` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheTypeBody {
    /// Flushes are not offered to the guest.
    Unsafe,
    /// Flushes are offered and reach the disk.
    Writeback,
}

/// Firecracker's `io_engine` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    /// Blocking reads and writes on the VMM thread.
    Sync,
    /// io_uring: not implemented by cabin.
    Async,
}

/// `PUT /network-interfaces/{iface_id}`: a virtio-net device on a TAP.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    /// Name of the interface.
    #[serde(deserialize_with = "de_iface_id")]
    pub iface_id: String,
    /// Existing TAP device on the host.
    #[serde(deserialize_with = "de_host_dev_name")]
    pub host_dev_name: String,
    /// MAC address the guest sees (`52:54:00:12:34:56`); absent means a stable default.
    #[serde(
        default,
        deserialize_with = "de_guest_mac",
        skip_serializing_if = "Option::is_none"
    )]
    pub guest_mac: Option<String>,
    /// MTU offered to the guest, 68 to 65535.
    #[serde(
        default,
        deserialize_with = "de_mtu",
        skip_serializing_if = "Option::is_none"
    )]
    pub mtu: Option<u16>,
    /// Limits on what the guest receives.
    #[serde(
        default,
        deserialize_with = "de_rx_rate_limiter",
        skip_serializing_if = "Option::is_none"
    )]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// Limits on what the guest sends.
    #[serde(
        default,
        deserialize_with = "de_tx_rate_limiter",
        skip_serializing_if = "Option::is_none"
    )]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// `PATCH /network-interfaces/{iface_id}` on a running VM: new rate limiters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterfacePatch {
    /// Which interface.
    #[serde(deserialize_with = "de_iface_id")]
    pub iface_id: String,
    /// New limits on what the guest receives.
    #[serde(default, deserialize_with = "de_rx_rate_limiter")]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// New limits on what the guest sends.
    #[serde(default, deserialize_with = "de_tx_rate_limiter")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// Minimum MTU a virtio-net device may offer (IPv4's minimum).
pub const MIN_MTU: u16 = 68;

/// `PUT /actions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// What to do.
    #[serde(deserialize_with = "de_action_type")]
    pub action_type: ActionType,
    /// `Shutdown` only (a cabin extension): seconds the guest gets to power off
    /// after the power button before cabin stops it; [`SHUTDOWN_TIMEOUT_S`] if absent.
    #[serde(
        default,
        deserialize_with = "de_timeout_s",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_s: Option<u64>,
}

/// Seconds a guest gets to power off after `Shutdown` presses its power button.
pub const SHUTDOWN_TIMEOUT_S: u64 = 30;
/// Longest `timeout_s` accepted (a day).
pub const MAX_SHUTDOWN_TIMEOUT_S: u64 = 86_400;

impl Action {
    /// An action without options.
    pub fn new(action_type: ActionType) -> Self {
        Action {
            action_type,
            timeout_s: None,
        }
    }

    /// The `Shutdown` timeout, or why `timeout_s` is wrong.
    pub fn shutdown_timeout(&self) -> Result<std::time::Duration, String> {
        match (self.action_type, self.timeout_s) {
            (ActionType::Shutdown, None) => Ok(std::time::Duration::from_secs(SHUTDOWN_TIMEOUT_S)),
            (ActionType::Shutdown, Some(s)) if (1..=MAX_SHUTDOWN_TIMEOUT_S).contains(&s) => {
                Ok(std::time::Duration::from_secs(s))
            }
            (ActionType::Shutdown, Some(s)) => Err(format!(
                "timeout_s: {s} is out of range: give 1 to {MAX_SHUTDOWN_TIMEOUT_S} seconds"
            )),
            (other, _) => Err(format!(
                "timeout_s: only the Shutdown action takes a timeout, not {other:?}"
            )),
        }
    }
}

/// The actions of `PUT /actions` cabin implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Boot the configured guest.
    InstanceStart,
    /// Press Ctrl-Alt-Del on the guest's keyboard.
    SendCtrlAltDel,
    /// Write a metrics line now.
    FlushMetrics,
    /// Press the guest's ACPI power button, and stop the VM if the guest has not
    /// powered off after `timeout_s` (a cabin extension).
    Shutdown,
}

/// `PATCH /vm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStatePatch {
    /// The state wanted.
    #[serde(deserialize_with = "de_state")]
    pub state: VmStateRequest,
}

/// The states `PATCH /vm` can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmStateRequest {
    /// Park the vCPUs.
    Paused,
    /// Run them again.
    Resumed,
}

/// `GET /`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceInfo {
    /// Instance id.
    pub id: String,
    /// `Not started`, `Running`, `Paused` or `Exited`.
    pub state: String,
    /// cabin's version.
    pub vmm_version: String,
    /// Always `cabin`.
    pub app_name: String,
}

/// `GET /version`: Firecracker's field, carrying cabin's version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionInfo {
    /// cabin's version (Firecracker clients read this field).
    pub firecracker_version: String,
}

/// The whole configuration: the `--config-file` format and the answer of
/// `GET /vm/config` (Firecracker's full VM configuration, for the parts cabin has).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDocument {
    /// Kernel, initrd, command line.
    #[serde(
        rename = "boot-source",
        default,
        deserialize_with = "de_boot_source",
        skip_serializing_if = "Option::is_none"
    )]
    pub boot_source: Option<BootSource>,
    /// vCPUs and memory.
    #[serde(
        rename = "machine-config",
        default,
        deserialize_with = "de_machine_config",
        skip_serializing_if = "Option::is_none"
    )]
    pub machine_config: Option<MachineConfig>,
    /// Block devices, the root device first.
    #[serde(default, deserialize_with = "de_drives")]
    pub drives: Vec<Drive>,
    /// Network interfaces, in eth0, eth1, ... order.
    #[serde(
        rename = "network-interfaces",
        default,
        deserialize_with = "de_network_interfaces"
    )]
    pub network_interfaces: Vec<NetworkInterface>,
    /// Where cabin's log goes.
    #[serde(
        default,
        deserialize_with = "de_logger",
        skip_serializing_if = "Option::is_none"
    )]
    pub logger: Option<Logger>,
    /// Where metrics lines go.
    #[serde(
        default,
        deserialize_with = "de_metrics",
        skip_serializing_if = "Option::is_none"
    )]
    pub metrics: Option<Metrics>,
    /// A virtio-rng device.
    #[serde(
        default,
        deserialize_with = "de_entropy",
        skip_serializing_if = "Option::is_none"
    )]
    pub entropy: Option<Entropy>,
    /// Where the serial console's output goes.
    #[serde(
        default,
        deserialize_with = "de_serial",
        skip_serializing_if = "Option::is_none"
    )]
    pub serial: Option<Serial>,
    /// A virtio-vsock device.
    #[serde(
        default,
        deserialize_with = "de_vsock",
        skip_serializing_if = "Option::is_none"
    )]
    pub vsock: Option<Vsock>,
}

/// One configuration change, as the API thread hands it to the VMM thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigChange {
    /// `PUT /machine-config`.
    Machine(MachineConfig),
    /// `PATCH /machine-config`.
    MachinePatch(MachineConfigPatch),
    /// `PUT /boot-source`.
    Boot(BootSource),
    /// `PUT /drives/{id}`.
    Drive(Drive),
    /// `PUT /network-interfaces/{id}`.
    Net(NetworkInterface),
    /// `PUT /logger`.
    Logger(Logger),
    /// `PUT /metrics`.
    Metrics(Metrics),
    /// `PUT /entropy`.
    Entropy(Entropy),
    /// `PUT /serial`.
    Serial(Serial),
    /// `PUT /vsock`.
    Vsock(Vsock),
}

/// A change to a running VM's device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceUpdate {
    /// `PATCH /drives/{id}`.
    Drive(DrivePatch),
    /// `PATCH /network-interfaces/{id}`.
    Net(NetworkInterfacePatch),
}

/// Deserializes one field and puts its name in front of serde's complaint, which
/// otherwise says what was wrong but not where.
pub(crate) fn named<'de, D, T>(deserializer: D, name: &str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map_err(|e| {
        let text = e.to_string();
        de::Error::custom(format!("{name}: {}", without_position(&text)))
    })
}

/// serde_json ends its messages with ` at line L column C`; the outer error adds the
/// position again, so the inner one is dropped.
fn without_position(text: &str) -> &str {
    if let Some((head, tail)) = text.rsplit_once(" at line ") {
        if let Some((line, column)) = tail.split_once(" column ") {
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if digits(line) && digits(column) {
                return head;
            }
        }
    }
    text
}

macro_rules! named_fields {
    ($($func:ident => $name:literal: $ty:ty;)*) => {
        $(
            fn $func<'de, D: Deserializer<'de>>(deserializer: D) -> Result<$ty, D::Error> {
                named(deserializer, $name)
            }
        )*
    };
}

named_fields! {
    de_vcpu_count => "vcpu_count": u32;
    de_mem_size_mib => "mem_size_mib": u64;
    de_smt => "smt": Option<bool>;
    de_opt_vcpu_count => "vcpu_count": Option<u32>;
    de_opt_mem_size_mib => "mem_size_mib": Option<u64>;
    de_track_dirty_pages => "track_dirty_pages": Option<bool>;
    de_huge_pages => "huge_pages": Option<HugePagesBody>;
    de_cpu_template => "cpu_template": Option<String>;
    de_partuuid => "partuuid": Option<String>;
    de_cache_type => "cache_type": Option<CacheTypeBody>;
    de_io_engine => "io_engine": Option<IoEngine>;
    de_rate_limiter => "rate_limiter": Option<RateLimiter>;
    de_socket => "socket": Option<String>;
    de_opt_path_on_host => "path_on_host": Option<String>;
    de_mtu => "mtu": Option<u16>;
    de_rx_rate_limiter => "rx_rate_limiter": Option<RateLimiter>;
    de_tx_rate_limiter => "tx_rate_limiter": Option<RateLimiter>;
    de_logger => "logger": Option<Logger>;
    de_metrics => "metrics": Option<Metrics>;
    de_entropy => "entropy": Option<Entropy>;
    de_serial => "serial": Option<Serial>;
    de_vsock => "vsock": Option<Vsock>;
    de_kernel_image_path => "kernel_image_path": String;
    de_initrd_path => "initrd_path": Option<String>;
    de_boot_args => "boot_args": Option<String>;
    de_drive_id => "drive_id": String;
    de_path_on_host => "path_on_host": String;
    de_is_root_device => "is_root_device": bool;
    de_is_read_only => "is_read_only": Option<bool>;
    de_iface_id => "iface_id": String;
    de_host_dev_name => "host_dev_name": String;
    de_guest_mac => "guest_mac": Option<String>;
    de_action_type => "action_type": ActionType;
    de_timeout_s => "timeout_s": Option<u64>;
    de_state => "state": VmStateRequest;
    de_boot_source => "boot-source": Option<BootSource>;
    de_machine_config => "machine-config": Option<MachineConfig>;
    de_drives => "drives": Vec<Drive>;
    de_network_interfaces => "network-interfaces": Vec<NetworkInterface>;
}

/// Applies one change to `config`, or says which field is wrong and why.
///
/// - machine-config (PUT) sets vCPUs, memory and the options, absent options back to
///   their defaults; PATCH changes only the fields it gives;
/// - boot-source sets the kernel and the initrd (absent `initrd_path`: none); its
///   `boot_args` replace the command line, absent `boot_args` keep the current one
///   (the default unless the command line set one);
/// - a drive with an existing `drive_id` replaces it in place, a root device moves
///   to the front (/dev/vda);
/// - a network interface with an existing `iface_id` replaces it in place;
/// - logger, metrics, entropy, serial and vsock replace what was set before.
///
/// Files must exist here; whether they can be opened is checked again at start.
pub fn apply(config: &mut VmConfig, change: ConfigChange) -> Result<(), String> {
    match change {
        ConfigChange::Machine(machine) => {
            let patch = MachineConfigPatch {
                vcpu_count: Some(machine.vcpu_count),
                mem_size_mib: Some(machine.mem_size_mib),
                smt: Some(machine.smt.unwrap_or(false)),
                track_dirty_pages: Some(machine.track_dirty_pages.unwrap_or(false)),
                huge_pages: Some(machine.huge_pages.unwrap_or(HugePagesBody::None)),
                cpu_template: machine.cpu_template,
            };
            apply_machine(config, &patch)
        }
        ConfigChange::MachinePatch(patch) => apply_machine(config, &patch),
        ConfigChange::Boot(boot) => apply_boot(config, boot),
        ConfigChange::Drive(drive) => apply_drive(config, drive),
        ConfigChange::Net(net) => apply_net(config, net),
        ConfigChange::Logger(logger) => {
            config.logger = Some(observe::check_logger(&logger)?);
            Ok(())
        }
        ConfigChange::Metrics(metrics) => {
            config.metrics_path = Some(observe::check_output_path(
                "metrics_path",
                &metrics.metrics_path,
            )?);
            Ok(())
        }
        ConfigChange::Entropy(entropy) => {
            let rate_limiter =
                limits::check_optional("rate_limiter", entropy.rate_limiter.as_ref())?;
            config.entropy = Some(EntropyConfig { rate_limiter });
            Ok(())
        }
        ConfigChange::Serial(serial) => {
            config.serial_out = observe::check_serial(&serial)?;
            Ok(())
        }
        ConfigChange::Vsock(vsock) => {
            config.vsock = Some(check_vsock(vsock.guest_cid, &vsock.uds_path)?);
            Ok(())
        }
    }
}

fn apply_machine(config: &mut VmConfig, machine: &MachineConfigPatch) -> Result<(), String> {
    let vcpus = machine.vcpu_count.unwrap_or(config.vcpus);
    let mem_size_mib = machine.mem_size_mib.unwrap_or(config.mem_size_mib);
    let smt = machine.smt.unwrap_or(config.machine.smt);
    if vcpus == 0 {
        return Err("vcpu_count 0: a VM needs at least 1 vCPU".into());
    }
    if vcpus > MAX_VCPUS {
        return Err(format!(
            "vcpu_count {vcpus} is more than cabin supports ({MAX_VCPUS})"
        ));
    }
    if mem_size_mib < MIN_MEM_MIB {
        return Err(format!(
            "mem_size_mib {mem_size_mib} is too small: give {MIN_MEM_MIB} or more"
        ));
    }
    if smt && vcpus > 1 && vcpus & 1 != 0 {
        return Err(format!(
            "smt true with vcpu_count {vcpus}: with two threads per core, give 1 or an even number of vCPUs"
        ));
    }
    if let Some(template) = &machine.cpu_template {
        if template != "None" {
            return Err(format!(
                "cpu_template {template} is not supported: cabin gives the guest the host's CPU features as KVM offers them; use None or leave it out"
            ));
        }
    }
    let huge_pages = match machine.huge_pages {
        Some(HugePagesBody::Size2M) => HugePages::Size2M,
        Some(HugePagesBody::None) => HugePages::None,
        None => config.machine.huge_pages,
    };
    if huge_pages == HugePages::Size2M && mem_size_mib & 1 != 0 {
        return Err(format!(
            "mem_size_mib {mem_size_mib} is not a whole number of 2 MiB huge pages: give an even size"
        ));
    }
    config.vcpus = vcpus;
    config.mem_size_mib = mem_size_mib;
    config.machine.smt = smt;
    config.machine.huge_pages = huge_pages;
    if let Some(track) = machine.track_dirty_pages {
        config.machine.track_dirty_pages = track;
    }
    Ok(())
}

fn apply_boot(config: &mut VmConfig, boot: BootSource) -> Result<(), String> {
    let kernel = check_file("kernel_image_path", &boot.kernel_image_path, false)?;
    let initrd = match &boot.initrd_path {
        Some(path) => Some(check_file("initrd_path", path, false)?),
        None => None,
    };
    config.kernel = Some(kernel);
    config.initrd = initrd;
    if let Some(args) = boot.boot_args {
        config.cmdline = args;
    }
    Ok(())
}

fn apply_drive(config: &mut VmConfig, drive: Drive) -> Result<(), String> {
    check_id("drive_id", &drive.drive_id)?;
    if drive.drive_id.len() > DISK_ID_MAX_LEN {
        return Err(format!(
            "drive_id '{}' is longer than {DISK_ID_MAX_LEN} bytes",
            drive.drive_id
        ));
    }
    if drive.socket.is_some() {
        return Err(
            "socket: vhost-user drives are not supported by cabin; give path_on_host".into(),
        );
    }
    if drive.io_engine == Some(IoEngine::Async) {
        return Err("io_engine Async is not supported by cabin: use Sync or leave it out".into());
    }
    if let Some(partuuid) = &drive.partuuid {
        check_partuuid(partuuid, drive.is_root_device)?;
    }
    let path = check_file("path_on_host", &drive.path_on_host, true)?;
    let disk = DiskConfig {
        path,
        read_only: drive.is_read_only.unwrap_or(false),
        id: Some(drive.drive_id.clone()),
        root: drive.is_root_device,
        partuuid: drive.partuuid.clone(),
        cache_type: match drive.cache_type {
            Some(CacheTypeBody::Writeback) => CacheType::Writeback,
            Some(CacheTypeBody::Unsafe) | None => CacheType::Unsafe,
        },
        rate_limiter: limits::check_optional("rate_limiter", drive.rate_limiter.as_ref())?,
    };
    let existing =
        (0..config.disks.len()).find(|&i| drive_id_of(i, &config.disks[i]) == drive.drive_id);
    if disk.root {
        // One root device: another drive that was root is not any more.
        for other in config.disks.iter_mut() {
            other.root = false;
        }
    }
    match (existing, drive.is_root_device) {
        (Some(i), false) => config.disks[i] = disk,
        (Some(i), true) => {
            config.disks.remove(i);
            config.disks.insert(0, disk);
        }
        (None, false) => config.disks.push(disk),
        (None, true) => config.disks.insert(0, disk),
    }
    Ok(())
}

/// A partition UUID as Linux reads it after `root=PARTUUID=`: a GPT UUID
/// (`8-4-4-4-12` hex digits) or an MBR disk signature with a partition number
/// (`abcd1234-01`).
fn check_partuuid(partuuid: &str, is_root: bool) -> Result<(), String> {
    if !is_root {
        return Err(format!(
            "partuuid {partuuid} is only used for the root device: set is_root_device true or leave partuuid out"
        ));
    }
    let groups: Vec<&str> = partuuid.split('-').collect();
    let hex = |g: &&str| !g.is_empty() && g.bytes().all(|b| b.is_ascii_hexdigit());
    let gpt = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]);
    let mbr = groups.len() == 2 && groups[0].len() == 8 && groups[1].len() == 2;
    if (gpt || mbr) && groups.iter().all(hex) {
        Ok(())
    } else {
        Err(format!(
            "partuuid '{partuuid}' is not a partition UUID (like 6b1b7c14-3f52-4d9e-8a37-0c6b2e0d9a11, or abcd1234-01 for MBR)"
        ))
    }
}

fn apply_net(config: &mut VmConfig, net: NetworkInterface) -> Result<(), String> {
    check_id("iface_id", &net.iface_id)?;
    if net.host_dev_name.is_empty() || net.host_dev_name.len() > HOST_DEV_NAME_MAX_LEN {
        return Err(format!(
            "host_dev_name '{}' is not a valid interface name (1 to {HOST_DEV_NAME_MAX_LEN} bytes)",
            net.host_dev_name
        ));
    }
    let mac = match &net.guest_mac {
        Some(text) => Some(parse_mac(text).map_err(|e| format!("guest_mac {e}"))?),
        None => None,
    };
    if let Some(mtu) = net.mtu.filter(|&mtu| mtu < MIN_MTU) {
        return Err(format!("mtu {mtu} is too small: give {MIN_MTU} to 65535"));
    }
    let nic = NetConfig {
        id: Some(net.iface_id.clone()),
        tap: net.host_dev_name,
        mac,
        mtu: net.mtu,
        rx_rate_limiter: limits::check_optional("rx_rate_limiter", net.rx_rate_limiter.as_ref())?,
        tx_rate_limiter: limits::check_optional("tx_rate_limiter", net.tx_rate_limiter.as_ref())?,
    };
    match (0..config.nets.len()).find(|&i| iface_id_of(i, &config.nets[i]) == net.iface_id) {
        Some(i) => config.nets[i] = nic,
        None => config.nets.push(nic),
    }
    Ok(())
}

fn check_id(field: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{field} is empty"));
    }
    Ok(())
}

/// Checks that `path` names an existing regular file (or block device when
/// `block_ok`) and returns it.
fn check_file(field: &str, path: &str, block_ok: bool) -> Result<PathBuf, String> {
    if path.is_empty() {
        return Err(format!("{field} is empty"));
    }
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!("{field} {path} does not exist"))
        }
        Err(e) => return Err(format!("{field} {path} cannot be read: {e}")),
    };
    let kind_ok = meta.is_file() || (block_ok && meta.file_type().is_block_device());
    if !kind_ok {
        let wanted = if block_ok {
            "a regular file or a block device"
        } else {
            "a regular file"
        };
        return Err(format!("{field} {path} is not {wanted}"));
    }
    Ok(PathBuf::from(path))
}

/// The `drive_id` the API shows for the `index`th disk: its id, or `drive<index>` for
/// a disk given on the command line without one.
pub fn drive_id_of(index: usize, disk: &DiskConfig) -> String {
    disk.id.clone().unwrap_or_else(|| format!("drive{index}"))
}

/// The `iface_id` the API shows for the `index`th interface: its id, or `eth<index>`
/// for one given on the command line.
pub fn iface_id_of(index: usize, net: &NetConfig) -> String {
    net.id.clone().unwrap_or_else(|| format!("eth{index}"))
}

#[cfg(test)]
mod tests;
