//! The validated description of a VM, and the checks that turn user mistakes into
//! one clear message each.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use devices::rate_limiter::RateLimiterConfig;
use devices::virtio::block::CacheType;
use thiserror::Error;

use crate::logger::LoggerConfig;

/// Command line used when the user gives none (serial console).
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1";
/// Command line used when the user gives none and asks for a virtio console.
pub const DEFAULT_CMDLINE_VIRTIO_CONSOLE: &str = "console=hvc0 reboot=k panic=-1";
/// Longest block device id the guest can read (VIRTIO_BLK_ID_BYTES).
pub const DISK_ID_MAX_LEN: usize = 20;
/// vCPUs when the user gives no `--vcpus`.
pub const DEFAULT_VCPUS: u32 = 1;
/// Guest memory in MiB when the user gives no `--memory`.
pub const DEFAULT_MEM_MIB: u64 = 128;
/// Smallest guest memory that leaves room for the boot structures and a kernel.
pub const MIN_MEM_MIB: u64 = 16;
/// Bytes in a MiB.
pub const MIB: u64 = 1 << 20;

/// Which device is the interactive console.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum ConsoleKind {
    /// COM1 (ttyS0).
    Serial,
    /// virtio console (hvc0).
    Virtio,
}

impl ConsoleKind {
    /// The command line used when the user gives none.
    pub fn default_cmdline(self) -> &'static str {
        match self {
            ConsoleKind::Serial => DEFAULT_CMDLINE,
            ConsoleKind::Virtio => DEFAULT_CMDLINE_VIRTIO_CONSOLE,
        }
    }
}

/// One `--disk`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiskConfig {
    /// Raw image file or block device.
    pub path: PathBuf,
    /// The guest may only read.
    pub read_only: bool,
    /// Serial the guest reads with GET_ID.
    pub id: Option<String>,
    /// The root device: the guest mounts it as `/` (`root=` on the command line).
    pub root: bool,
    /// Partition UUID of the root filesystem (`root=PARTUUID=...`); `None`: the
    /// whole device (`root=/dev/vda`).
    pub partuuid: Option<String>,
    /// Whether guest flushes reach the disk.
    pub cache_type: CacheType,
    /// Limits on requests and bytes.
    pub rate_limiter: Option<RateLimiterConfig>,
}

/// How guest RAM is backed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HugePages {
    /// Ordinary pages.
    #[default]
    None,
    /// 2 MiB huge pages from the host's reserved pool (hugetlbfs).
    Size2M,
}

/// Machine options beyond vCPUs and memory (Firecracker's machine-config fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MachineOptions {
    /// Two hardware threads per core in the guest's CPU topology.
    pub smt: bool,
    /// KVM logs which guest pages are written (for diff snapshots).
    pub track_dirty_pages: bool,
    /// Page size backing guest RAM.
    pub huge_pages: HugePages,
    /// Give the guest no ACPI tables (`--no-acpi`): it then finds CPUs in the MP
    /// table and virtio devices on the command line, and cannot power off.
    pub no_acpi: bool,
}

/// A virtio-rng device (`PUT /entropy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntropyConfig {
    /// Limits on requests and bytes of entropy.
    pub rate_limiter: Option<RateLimiterConfig>,
}

/// A virtio-vsock device with a Unix-socket host side (`--vsock`, `PUT /vsock`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VsockConfig {
    /// The guest's context id (3 or more).
    pub guest_cid: u32,
    /// The Unix socket host processes connect to (absolute).
    pub uds_path: PathBuf,
}

/// Everything needed to build and boot one VM.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmConfig {
    /// Kernel image (ELF vmlinux or bzImage); unset until the API's boot source.
    pub kernel: Option<PathBuf>,
    /// Optional initramfs.
    pub initrd: Option<PathBuf>,
    /// Kernel command line, as the user wrote it.
    pub cmdline: String,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest memory size in MiB.
    pub mem_size_mib: u64,
    /// Block devices, in /dev/vda, vdb, ... order.
    pub disks: Vec<DiskConfig>,
    /// The interactive console.
    pub console: ConsoleKind,
    /// Network interfaces, in eth0, eth1, ... order.
    pub nets: Vec<NetConfig>,
    /// SMT, dirty-page tracking, huge pages.
    pub machine: MachineOptions,
    /// Where cabin's log goes (`PUT /logger`); `None`: stderr.
    pub logger: Option<LoggerConfig>,
    /// Where metrics lines go (`PUT /metrics`); `None`: no metrics.
    pub metrics_path: Option<PathBuf>,
    /// A virtio-rng device (`PUT /entropy`); `None`: none.
    pub entropy: Option<EntropyConfig>,
    /// Where the guest's serial output goes instead of stdout (`PUT /serial`).
    pub serial_out: Option<PathBuf>,
    /// A virtio-vsock device (`--vsock`, `PUT /vsock`); `None`: none.
    pub vsock: Option<VsockConfig>,
}

impl Default for VmConfig {
    /// No kernel yet, the defaults of `cabin run`, no devices.
    fn default() -> Self {
        VmConfig {
            kernel: None,
            initrd: None,
            cmdline: DEFAULT_CMDLINE.to_owned(),
            vcpus: DEFAULT_VCPUS,
            mem_size_mib: DEFAULT_MEM_MIB,
            disks: Vec::new(),
            console: ConsoleKind::Serial,
            nets: Vec::new(),
            machine: MachineOptions::default(),
            logger: None,
            metrics_path: None,
            entropy: None,
            serial_out: None,
            vsock: None,
        }
    }
}

/// One `--net`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetConfig {
    /// API name of the interface (`iface_id`), if it came from the API.
    pub id: Option<String>,
    /// Existing TAP device on the host.
    pub tap: String,
    /// MAC address the guest sees; a stable default when unset.
    pub mac: Option<[u8; 6]>,
    /// MTU offered to the guest (VIRTIO_NET_F_MTU); `None`: the guest's default.
    pub mtu: Option<u16>,
    /// Limits on frames the guest receives.
    pub rx_rate_limiter: Option<RateLimiterConfig>,
    /// Limits on frames the guest sends.
    pub tx_rate_limiter: Option<RateLimiterConfig>,
}

/// What the host allows, measured once and passed to [`VmConfig::validate`].
#[derive(Clone, Copy, Debug)]
pub struct HostLimits {
    /// Largest vCPU count this VMM and the host's KVM both support.
    pub max_vcpus: u32,
    /// Host physical memory in bytes (MemTotal).
    pub mem_total_bytes: u64,
}

/// A configuration the user has to fix.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// `--memory` below the minimum.
    #[error("Guest memory of {0} MiB is too small: give --memory {MIN_MEM_MIB} or more")]
    MemoryTooSmall(u64),
    /// `--memory` beyond what the host has.
    #[error(
        "Guest memory of {requested} MiB is more than this host has ({host} MiB): give a smaller --memory"
    )]
    MemoryTooLarge {
        /// Requested MiB.
        requested: u64,
        /// Host MiB.
        host: u64,
    },
    /// `--vcpus 0`.
    #[error("A VM needs at least one vCPU: give --vcpus 1 or more")]
    NoVcpus,
    /// `--vcpus` beyond KVM's or the MP table's limit.
    #[error("{requested} vCPUs are more than this host's KVM and cabin allow ({max}): give a smaller --vcpus")]
    TooManyVcpus {
        /// Requested count.
        requested: u32,
        /// Maximum allowed.
        max: u32,
    },
    /// A file the user named does not exist.
    #[error("{what} {path} does not exist")]
    Missing {
        /// Which file ("Kernel", "Initrd").
        what: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// A file the user named is a directory or a device.
    #[error("{what} {path} is not a regular file")]
    NotAFile {
        /// Which file.
        what: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// No kernel was given.
    #[error("No kernel to boot: give --kernel, or PUT /boot-source before InstanceStart")]
    NoKernel,
    /// A disk that is neither a regular file nor a block device.
    #[error("Disk {0} is not a regular file or a block device")]
    DiskNotImage(PathBuf),
    /// A writable disk the user may not write.
    #[error("Disk {0} is not writable: add readonly=on to its --disk, or fix its permissions")]
    DiskNotWritable(PathBuf, #[source] io::Error),
    /// The same image given twice.
    #[error("Disk {0} is the same file as disk {1}: give each image once")]
    DiskTwice(PathBuf, PathBuf),
    /// An id longer than the guest can read.
    #[error("Disk id '{0}' is longer than {DISK_ID_MAX_LEN} bytes")]
    DiskIdTooLong(String),
    /// Two disks with one id.
    #[error("Disk id '{0}' is given to two disks")]
    DiskIdTwice(String),
    /// A file the user named cannot be opened.
    #[error("{what} {path} cannot be read")]
    Unreadable {
        /// Which file.
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl VmConfig {
    /// Guest memory size in bytes.
    pub fn mem_size_bytes(&self) -> u64 {
        // validate() bounds mem_size_mib by the host's memory, so this cannot overflow
        // for a validated config; saturate for the others.
        self.mem_size_mib.saturating_mul(MIB)
    }

    /// Checks the files the user named: kernel, initrd, disks. Needs no KVM.
    pub fn validate_files(&self) -> Result<(), ConfigError> {
        let kernel = self.kernel.as_deref().ok_or(ConfigError::NoKernel)?;
        check_readable_file("Kernel", kernel)?;
        if let Some(initrd) = &self.initrd {
            check_readable_file("Initrd", initrd)?;
        }
        self.validate_disks()
    }

    /// Checks the disks: each exists, none is given twice, ids are unique and short.
    pub fn validate_disks(&self) -> Result<(), ConfigError> {
        let mut seen: Vec<(u64, u64, &Path)> = Vec::new();
        let mut ids: Vec<&str> = Vec::new();
        for disk in &self.disks {
            let meta = check_disk(disk)?;
            let key = (meta.dev(), meta.ino());
            if let Some((_, _, first)) = seen.iter().find(|(dev, ino, _)| (*dev, *ino) == key) {
                return Err(ConfigError::DiskTwice(
                    disk.path.clone(),
                    first.to_path_buf(),
                ));
            }
            seen.push((key.0, key.1, &disk.path));
            if let Some(id) = &disk.id {
                if id.len() > DISK_ID_MAX_LEN {
                    return Err(ConfigError::DiskIdTooLong(id.clone()));
                }
                if ids.contains(&id.as_str()) {
                    return Err(ConfigError::DiskIdTwice(id.clone()));
                }
                ids.push(id);
            }
        }
        Ok(())
    }

    /// Checks every field against the host; the first problem found is returned.
    pub fn validate(&self, host: &HostLimits) -> Result<(), ConfigError> {
        self.validate_files()?;
        self.validate_machine(host)
    }

    /// Checks memory size and vCPU count against the host.
    pub fn validate_machine(&self, host: &HostLimits) -> Result<(), ConfigError> {
        if self.mem_size_mib < MIN_MEM_MIB {
            return Err(ConfigError::MemoryTooSmall(self.mem_size_mib));
        }
        let host_mib = host.mem_total_bytes / MIB;
        if self.mem_size_mib > host_mib {
            return Err(ConfigError::MemoryTooLarge {
                requested: self.mem_size_mib,
                host: host_mib,
            });
        }
        if self.vcpus == 0 {
            return Err(ConfigError::NoVcpus);
        }
        if self.vcpus > host.max_vcpus {
            return Err(ConfigError::TooManyVcpus {
                requested: self.vcpus,
                max: host.max_vcpus,
            });
        }
        Ok(())
    }
}

fn check_readable_file(what: &'static str, path: &Path) -> Result<(), ConfigError> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ConfigError::Missing {
                what,
                path: path.to_owned(),
            })
        }
        Err(source) => {
            return Err(ConfigError::Unreadable {
                what,
                path: path.to_owned(),
                source,
            })
        }
    };
    if !meta.is_file() {
        return Err(ConfigError::NotAFile {
            what,
            path: path.to_owned(),
        });
    }
    fs::File::open(path).map_err(|source| ConfigError::Unreadable {
        what,
        path: path.to_owned(),
        source,
    })?;
    Ok(())
}

fn check_disk(disk: &DiskConfig) -> Result<fs::Metadata, ConfigError> {
    let meta = fs::metadata(&disk.path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ConfigError::Missing {
            what: "Disk",
            path: disk.path.clone(),
        },
        _ => ConfigError::Unreadable {
            what: "Disk",
            path: disk.path.clone(),
            source: e,
        },
    })?;
    if !meta.is_file() && !meta.file_type().is_block_device() {
        return Err(ConfigError::DiskNotImage(disk.path.clone()));
    }
    let mut options = fs::OpenOptions::new();
    options.read(true).write(!disk.read_only);
    if let Err(e) = options.open(&disk.path) {
        return Err(match e.kind() {
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
                if !disk.read_only =>
            {
                ConfigError::DiskNotWritable(disk.path.clone(), e)
            }
            _ => ConfigError::Unreadable {
                what: "Disk",
                path: disk.path.clone(),
                source: e,
            },
        });
    }
    Ok(meta)
}

/// Reads MemTotal from `/proc/meminfo`, in bytes.
pub fn host_mem_total_bytes() -> io::Result<u64> {
    parse_mem_total(&fs::read_to_string("/proc/meminfo")?)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no MemTotal in /proc/meminfo"))
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: HostLimits = HostLimits {
        max_vcpus: 254,
        mem_total_bytes: 8192 * MIB,
    };

    fn config_with_kernel(kernel: &Path) -> VmConfig {
        VmConfig {
            kernel: Some(kernel.to_owned()),
            vcpus: 1,
            mem_size_mib: 128,
            ..VmConfig::default()
        }
    }

    fn disk(path: &Path) -> DiskConfig {
        DiskConfig {
            path: path.to_owned(),
            ..DiskConfig::default()
        }
    }

    #[test]
    fn validate_files_disk_twice_is_refused_even_through_a_link() {
        let kernel = temp_kernel("disk2");
        let image = temp_kernel("disk2.img");
        let link = image.with_extension("link");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&image, &link).unwrap();
        let mut config = config_with_kernel(&kernel);
        config.disks = vec![disk(&image), disk(&link)];
        assert!(matches!(
            config.validate_files(),
            Err(ConfigError::DiskTwice(..))
        ));
        for f in [kernel, image, link] {
            fs::remove_file(f).unwrap();
        }
    }

    #[test]
    fn validate_files_disk_checks_kind_and_ids() {
        let kernel = temp_kernel("diskkind");
        let image = temp_kernel("diskkind.img");
        let mut config = config_with_kernel(&kernel);
        config.disks = vec![disk(Path::new("/nonexistent.img"))];
        assert!(matches!(
            config.validate_files(),
            Err(ConfigError::Missing { what: "Disk", .. })
        ));
        config.disks = vec![disk(&std::env::temp_dir())];
        assert!(matches!(
            config.validate_files(),
            Err(ConfigError::DiskNotImage(_))
        ));
        let mut long = disk(&image);
        long.id = Some("x".repeat(21));
        config.disks = vec![long];
        assert!(matches!(
            config.validate_files(),
            Err(ConfigError::DiskIdTooLong(_))
        ));
        let mut named = disk(&image);
        named.id = Some("root".into());
        config.disks = vec![named];
        assert!(config.validate_files().is_ok());
        fs::remove_file(kernel).unwrap();
        fs::remove_file(image).unwrap();
    }

    fn temp_kernel(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("cabin-config-{}-{name}", std::process::id()));
        fs::write(&path, b"kernel").unwrap();
        path
    }

    #[test]
    fn validate_defaults_succeed() {
        let kernel = temp_kernel("ok");
        assert!(config_with_kernel(&kernel).validate(&HOST).is_ok());
        fs::remove_file(kernel).unwrap();
    }

    #[test]
    fn validate_missing_kernel_names_path() {
        let config = config_with_kernel(Path::new("/nonexistent/vmlinux"));
        let err = config.validate(&HOST).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Kernel /nonexistent/vmlinux does not exist"
        );
    }

    #[test]
    fn validate_directory_as_initrd_is_refused() {
        let kernel = temp_kernel("dir");
        let mut config = config_with_kernel(&kernel);
        config.initrd = Some(std::env::temp_dir());
        let err = config.validate(&HOST).unwrap_err();
        assert!(matches!(err, ConfigError::NotAFile { what: "Initrd", .. }));
        fs::remove_file(kernel).unwrap();
    }

    #[test]
    fn validate_memory_bounds_are_enforced() {
        let kernel = temp_kernel("mem");
        let mut config = config_with_kernel(&kernel);
        config.mem_size_mib = 0;
        assert!(matches!(
            config.validate(&HOST),
            Err(ConfigError::MemoryTooSmall(0))
        ));
        config.mem_size_mib = 8193;
        assert!(matches!(
            config.validate(&HOST),
            Err(ConfigError::MemoryTooLarge {
                requested: 8193,
                host: 8192
            })
        ));
        config.mem_size_mib = u64::MAX;
        assert!(config.validate(&HOST).is_err());
        fs::remove_file(kernel).unwrap();
    }

    #[test]
    fn validate_vcpu_bounds_are_enforced() {
        let kernel = temp_kernel("vcpu");
        let mut config = config_with_kernel(&kernel);
        config.vcpus = 0;
        assert!(matches!(config.validate(&HOST), Err(ConfigError::NoVcpus)));
        config.vcpus = 255;
        assert!(matches!(
            config.validate(&HOST),
            Err(ConfigError::TooManyVcpus {
                requested: 255,
                max: 254
            })
        ));
        config.vcpus = 254;
        assert!(config.validate(&HOST).is_ok());
        fs::remove_file(kernel).unwrap();
    }

    #[test]
    fn parse_mem_total_reads_kib() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree: 1 kB\n";
        assert_eq!(parse_mem_total(meminfo), Some(24_576_000 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
    }
}
