//! Command-line interface of the `cabin` binary.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use devices::virtio::block::CacheType;

use crate::api::model::MIN_GUEST_CID;
use crate::config::{
    ConsoleKind, DiskConfig, NetConfig, VmConfig, VsockConfig, DEFAULT_MEM_MIB, DEFAULT_VCPUS,
};

/// cabin: a small KVM virtual machine monitor.
#[derive(Debug, Parser)]
#[command(name = "cabin", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The sub-commands of `cabin`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a Linux guest; its serial console is this terminal.
    Run(RunArgs),
    /// Tell whether this host can run guests, and what to fix when it cannot.
    Check,
    /// Drive a cabin started with --api-sock, for shell scripts.
    Ctl(CtlArgs),
    /// Work on snapshot files offline.
    Snapshot(SnapshotArgs),
    /// Run a command in the guest through cabin-agent (the VM needs a vsock).
    Exec(crate::exec::ExecArgs),
    /// Copy a file into or out of the guest through cabin-agent.
    Cp(crate::exec::CpArgs),
}

/// Arguments of `cabin snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: SnapshotAction,
}

/// `cabin snapshot` actions.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum SnapshotAction {
    /// Apply a diff snapshot's memory file onto the full memory file it follows:
    /// the full file then holds the diff snapshot's memory, and restores with its
    /// state file.
    Rebase {
        /// The full snapshot's memory file (changed in place).
        #[arg(long, value_name = "FILE")]
        memory_path: PathBuf,
        /// The diff snapshot's memory file.
        #[arg(long, value_name = "FILE")]
        diff_path: PathBuf,
    },
}

/// Arguments of `cabin ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The API socket of the cabin to drive.
    #[arg(long, value_name = "PATH")]
    pub api_sock: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub action: CtlAction,
}

/// `cabin ctl` actions.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum CtlAction {
    /// Print id, state and version (GET /).
    Status,
    /// Boot the configured guest (InstanceStart).
    Start,
    /// Pause the vCPUs (PATCH /vm Paused).
    Pause,
    /// Resume the vCPUs (PATCH /vm Resumed).
    Resume,
    /// Send Ctrl-Alt-Del to the guest (SendCtrlAltDel).
    CtrlAltDel,
    /// Print the whole configuration as a config file holds it (GET /vm/config).
    Config,
    /// Print cabin's version as Firecracker clients read it (GET /version).
    Version,
    /// Write a metrics line now (FlushMetrics; needs PUT /metrics first).
    FlushMetrics,
    /// Press the guest's ACPI power button and wait for cabin to exit; cabin stops
    /// the guest if it has not powered off after the timeout.
    Shutdown {
        /// Seconds the guest gets to power off (1 to 86400).
        #[arg(long, value_name = "S", default_value_t = crate::api::model::SHUTDOWN_TIMEOUT_S)]
        timeout: u64,
    },
    /// Pause the VM and write a snapshot into DIR (DIR/state and DIR/memory); the VM
    /// stays paused (`cabin ctl resume` goes on, `cabin run --restore DIR` starts a
    /// copy).
    Snapshot {
        /// The directory for the snapshot (created if missing).
        dir: PathBuf,
        /// Write only the memory pages changed since the last snapshot (the VM needs
        /// dirty-page tracking); `cabin snapshot rebase` applies them to a full one.
        #[arg(long)]
        diff: bool,
    },
}

/// Arguments of `cabin run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Guest kernel: an uncompressed ELF `vmlinux` or a `bzImage`.
    #[arg(long, value_name = "PATH", required_unless_present_any = ["api_sock", "config_file", "restore"])]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk (initramfs) to load next to the kernel.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line [default: "console=ttyS0 reboot=k panic=-1", or
    /// console=hvc0 with --console virtio].
    #[arg(long, value_name = "STR")]
    pub cmdline: Option<String>,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_VCPUS)]
    pub vcpus: u32,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MEM_MIB)]
    pub memory: u64,
    /// A virtio block device backed by a raw image file or block device; repeatable,
    /// the first is /dev/vda.
    #[arg(long, value_name = "path=FILE[,readonly=on][,id=NAME][,cache=writeback]", value_parser = parse_disk)]
    pub disk: Vec<DiskConfig>,
    /// Which device is the interactive console: the serial port (ttyS0) or a
    /// virtio console (hvc0; the serial port still shows early boot messages).
    #[arg(long, value_enum, default_value_t = ConsoleKind::Serial)]
    pub console: ConsoleKind,
    /// A virtio-net device on an existing TAP; repeatable (eth0, eth1, ...).
    #[arg(long, value_name = "tap=NAME[,mac=MAC]", value_parser = parse_net)]
    pub net: Vec<NetConfig>,
    /// A virtio-vsock device: the guest gets context id N, host processes reach its
    /// listeners through the Unix socket UDS (`CONNECT <port>`), and a guest
    /// connecting to the host's port P reaches a listener on UDS_P. With --restore,
    /// only path=UDS (the socket the restored device listens on).
    #[arg(long, value_name = "cid=N,path=UDS", value_parser = parse_vsock)]
    pub vsock: Option<VsockArg>,
    /// Serve the lifecycle API on this Unix socket and boot on InstanceStart;
    /// the other options pre-fill the configuration.
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// Read the whole VM configuration from a JSON file (Firecracker's format) and
    /// boot at once.
    #[arg(long, value_name = "PATH")]
    pub config_file: Option<PathBuf>,
    /// With --config-file: serve no API (the default when --api-sock is not given).
    #[arg(long, requires = "config_file")]
    pub no_api: bool,
    /// Run without the per-thread seccomp filters (VMM, API and vCPU threads).
    /// Only to confirm that cabin died on a system call its filters miss (it says
    /// "cabin: seccomp: blocked system call N"): please report such a call.
    #[arg(long)]
    pub no_seccomp: bool,
    /// Give the guest no ACPI tables: it finds its vCPUs in the MP table and its
    /// virtio devices on the command line, and `poweroff` only halts it.
    #[arg(long)]
    pub no_acpi: bool,
    /// Start from the snapshot in DIR (written by `cabin ctl snapshot DIR`) instead
    /// of booting; `--net tap=NAME` gives its interfaces, in order, other TAPs.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["kernel", "initrd", "cmdline", "disk", "config_file", "no_acpi", "vcpus", "memory", "console"])]
    pub restore: Option<PathBuf>,
}

/// Parses a MAC address `52:54:00:12:34:56`.
pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = text.split(':').collect();
    let bad = || format!("'{text}' is not a MAC address like 52:54:00:12:34:56");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 == 1 {
        return Err(format!(
            "'{text}' is a multicast MAC address: the first byte must be even"
        ));
    }
    Ok(mac)
}

/// Parses `tap=NAME[,mac=MAC]`.
pub fn parse_net(spec: &str) -> Result<NetConfig, String> {
    let mut tap = None;
    let mut mac = None;
    for part in spec.split(',') {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("'{part}' is not key=value (keys: tap, mac)"))?;
        match key {
            "tap" if !value.is_empty() && value.len() < 16 => tap = Some(value.to_owned()),
            "tap" => {
                return Err(format!(
                    "tap={value} is not a valid interface name (1 to 15 bytes)"
                ))
            }
            "mac" => mac = Some(parse_mac(value)?),
            _ => return Err(format!("unknown key '{key}' (keys: tap, mac)")),
        }
    }
    Ok(NetConfig {
        tap: tap.ok_or("tap=NAME is missing")?,
        mac,
        ..NetConfig::default()
    })
}

/// `--vsock`: the context id is absent only with `--restore`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockArg {
    /// The guest's context id.
    pub cid: Option<u32>,
    /// The host side's Unix socket, absolute.
    pub uds_path: PathBuf,
}

/// Parses `cid=N,path=UDS` (or only `path=UDS`), with the API's checks.
pub fn parse_vsock(spec: &str) -> Result<VsockArg, String> {
    let mut cid = None;
    let mut path = None;
    for part in spec.split(',') {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("'{part}' is not key=value (keys: cid, path)"))?;
        match key {
            "cid" => {
                let n = value.parse::<u32>().map_err(|_| {
                    format!("cid={value} is not a number from 3 to {}", u32::MAX - 1)
                })?;
                cid = Some(n);
            }
            "path" => path = Some(value),
            _ => return Err(format!("unknown key '{key}' (keys: cid, path)")),
        }
    }
    let path = path.ok_or("path=UDS is missing")?;
    let checked = crate::api::model::check_vsock(cid.unwrap_or(MIN_GUEST_CID), path)?;
    Ok(VsockArg {
        cid,
        uds_path: checked.uds_path,
    })
}

/// Parses `path=FILE[,readonly=on|off][,id=NAME][,cache=unsafe|writeback]`.
pub fn parse_disk(spec: &str) -> Result<DiskConfig, String> {
    let mut path = None;
    let mut read_only = false;
    let mut id = None;
    let mut cache_type = CacheType::default();
    for part in spec.split(',') {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("'{part}' is not key=value (keys: {DISK_KEYS})"))?;
        match key {
            "path" if !value.is_empty() => path = Some(PathBuf::from(value)),
            "path" => return Err("path= is empty".into()),
            "readonly" | "ro" => {
                read_only = match value {
                    "on" | "true" | "yes" | "1" => true,
                    "off" | "false" | "no" | "0" => false,
                    _ => return Err(format!("readonly={value} is not on or off")),
                }
            }
            "id" => id = Some(value.to_owned()),
            "cache" => {
                cache_type = match value {
                    "unsafe" => CacheType::Unsafe,
                    "writeback" => CacheType::Writeback,
                    _ => return Err(format!("cache={value} is not unsafe or writeback")),
                }
            }
            _ => return Err(format!("unknown key '{key}' (keys: {DISK_KEYS})")),
        }
    }
    let path = path.ok_or("path=FILE is missing")?;
    Ok(DiskConfig {
        path,
        read_only,
        id,
        cache_type,
        ..DiskConfig::default()
    })
}

/// The keys of `--disk`.
const DISK_KEYS: &str = "path, readonly, id, cache";

impl From<RunArgs> for VmConfig {
    fn from(args: RunArgs) -> Self {
        VmConfig {
            kernel: args.kernel,
            initrd: args.initrd,
            cmdline: args
                .cmdline
                .unwrap_or_else(|| args.console.default_cmdline().to_owned()),
            vcpus: args.vcpus,
            mem_size_mib: args.memory,
            disks: args.disk,
            console: args.console,
            nets: args.net,
            vsock: args.vsock.and_then(|vsock| {
                Some(VsockConfig {
                    guest_cid: vsock.cid?,
                    uds_path: vsock.uds_path,
                })
            }),
            machine: crate::config::MachineOptions {
                no_acpi: args.no_acpi,
                ..Default::default()
            },
            ..VmConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_run_without_options_uses_defaults() {
        let cli = Cli::try_parse_from(["cabin", "run", "--kernel", "/k"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        let config = VmConfig::from(args);
        assert_eq!(config.kernel, Some(PathBuf::from("/k")));
        assert_eq!(config.initrd, None);
        assert_eq!(config.cmdline, crate::config::DEFAULT_CMDLINE);
        assert!(config.disks.is_empty());
        assert_eq!(config.console, ConsoleKind::Serial);
        assert_eq!(config.vcpus, 1);
        assert_eq!(config.mem_size_mib, 128);
    }

    #[test]
    fn cli_run_with_all_options_parses_them() {
        let cli = Cli::try_parse_from([
            "cabin",
            "run",
            "--kernel",
            "/k",
            "--initrd",
            "/i",
            "--cmdline",
            "quiet",
            "--vcpus",
            "4",
            "--memory",
            "4096",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        assert_eq!(args.initrd, Some(PathBuf::from("/i")));
        assert_eq!(args.cmdline.as_deref(), Some("quiet"));
        assert_eq!(args.vcpus, 4);
        assert_eq!(args.memory, 4096);
    }

    #[test]
    fn cli_run_without_kernel_is_refused() {
        assert!(Cli::try_parse_from(["cabin", "run"]).is_err());
    }

    #[test]
    fn cli_virtio_console_changes_default_cmdline() {
        let cli =
            Cli::try_parse_from(["cabin", "run", "--kernel", "/k", "--console", "virtio"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        let config = VmConfig::from(args);
        assert_eq!(config.console, ConsoleKind::Virtio);
        assert!(config.cmdline.starts_with("console=hvc0"));
    }

    #[test]
    fn parse_disk_accepts_all_keys() {
        let disk = parse_disk("path=/a.img,readonly=on,id=data").unwrap();
        assert_eq!(disk.path, PathBuf::from("/a.img"));
        assert!(disk.read_only);
        assert_eq!(disk.id.as_deref(), Some("data"));
        assert!(!parse_disk("path=/b.img").unwrap().read_only);
    }

    #[test]
    fn parse_disk_cache_key_sets_flush_behaviour() {
        let disk = parse_disk("path=/x,cache=writeback").unwrap();
        assert_eq!(disk.cache_type, CacheType::Writeback);
        assert_eq!(parse_disk("path=/x").unwrap().cache_type, CacheType::Unsafe);
        let err = parse_disk("path=/x,cache=always").unwrap_err();
        assert_eq!(err, "cache=always is not unsafe or writeback");
    }

    #[test]
    fn parse_disk_refuses_mistakes() {
        assert!(parse_disk("readonly=on")
            .unwrap_err()
            .contains("path=FILE is missing"));
        assert!(parse_disk("path=/a,size=3")
            .unwrap_err()
            .contains("unknown key 'size'"));
        assert!(parse_disk("path=/a,readonly=maybe")
            .unwrap_err()
            .contains("not on or off"));
        assert!(parse_disk("/a.img").unwrap_err().contains("not key=value"));
        assert!(parse_disk("path=").is_err());
    }

    #[test]
    fn cli_disks_repeat_in_order() {
        let cli = Cli::try_parse_from([
            "cabin",
            "run",
            "--kernel",
            "/k",
            "--disk",
            "path=/a",
            "--disk",
            "path=/b,readonly=on",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        assert_eq!(args.disk.len(), 2);
        assert_eq!(args.disk[1].path, PathBuf::from("/b"));
    }

    #[test]
    fn parse_net_accepts_tap_and_mac() {
        let net = parse_net("tap=tap0,mac=52:54:00:ab:cd:ef").unwrap();
        assert_eq!(net.tap, "tap0");
        assert_eq!(net.mac, Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef]));
        assert_eq!(parse_net("tap=tap1").unwrap().mac, None);
    }

    #[test]
    fn parse_net_refuses_mistakes() {
        assert!(parse_net("mac=52:54:00:00:00:01")
            .unwrap_err()
            .contains("tap=NAME is missing"));
        assert!(parse_net("tap=averyveryverylongname").is_err());
        assert!(parse_net("tap=t,mac=52:54:00:00:00")
            .unwrap_err()
            .contains("not a MAC"));
        assert!(parse_net("tap=t,mac=01:00:00:00:00:01")
            .unwrap_err()
            .contains("multicast"));
        assert!(parse_net("tap=t,mac=zz:00:00:00:00:01").is_err());
    }

    #[test]
    fn parse_vsock_takes_cid_and_path_and_refuses_mistakes() {
        let vsock = parse_vsock("cid=7,path=v.sock").unwrap();
        assert_eq!(vsock.cid, Some(7));
        assert!(vsock.uds_path.is_absolute() && vsock.uds_path.ends_with("v.sock"));
        assert_eq!(parse_vsock("path=/tmp/v.sock").unwrap().cid, None);
        let cases = [
            ("cid=3", "path=UDS is missing"),
            ("cid=2,path=v", "guest_cid 2 is reserved"),
            ("cid=x,path=v", "cid=x is not a number"),
            (
                "cid=3,path=/nonexistent/v",
                "directory /nonexistent does not exist",
            ),
            ("cid=3,port=1", "unknown key 'port'"),
            ("cid", "'cid' is not key=value"),
        ];
        for (spec, expected) in cases {
            let err = parse_vsock(spec).unwrap_err();
            assert!(err.contains(expected), "{spec}: {err}");
        }
    }

    #[test]
    fn cli_api_sock_makes_kernel_optional() {
        assert!(Cli::try_parse_from(["cabin", "run", "--api-sock", "/tmp/s"]).is_ok());
        assert!(Cli::try_parse_from(["cabin", "run", "--config-file", "/tmp/c.json"]).is_ok());
        assert!(Cli::try_parse_from(["cabin", "run", "--no-api"]).is_err());
    }

    #[test]
    fn cli_no_seccomp_is_off_unless_given() {
        let parse = |args: &[&str]| {
            let Command::Run(args) = Cli::try_parse_from(args).unwrap().command else {
                panic!("expected run");
            };
            args.no_seccomp
        };
        assert!(!parse(&["cabin", "run", "--kernel", "/k"]));
        assert!(parse(&["cabin", "run", "--kernel", "/k", "--no-seccomp"]));
    }

    #[test]
    fn cli_ctl_parses_actions() {
        let cli =
            Cli::try_parse_from(["cabin", "ctl", "--api-sock", "/s", "ctrl-alt-del"]).unwrap();
        let Command::Ctl(args) = cli.command else {
            panic!("expected ctl");
        };
        assert_eq!(args.action, CtlAction::CtrlAltDel);
    }

    #[test]
    fn cli_check_parses() {
        let cli = Cli::try_parse_from(["cabin", "check"]).unwrap();
        assert!(matches!(cli.command, Command::Check));
    }
}
