//! Command-line interface of the `cabin` binary.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{VmConfig, DEFAULT_CMDLINE, DEFAULT_MEM_MIB, DEFAULT_VCPUS};

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
}

/// Arguments of `cabin run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Guest kernel: an uncompressed ELF `vmlinux` or a `bzImage`.
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,
    /// Initial ramdisk (initramfs) to load next to the kernel.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = DEFAULT_CMDLINE)]
    pub cmdline: String,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_VCPUS)]
    pub vcpus: u32,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MEM_MIB)]
    pub memory: u64,
}

impl From<RunArgs> for VmConfig {
    fn from(args: RunArgs) -> Self {
        VmConfig {
            kernel: args.kernel,
            initrd: args.initrd,
            cmdline: args.cmdline,
            vcpus: args.vcpus,
            mem_size_mib: args.memory,
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
        assert_eq!(config.kernel, PathBuf::from("/k"));
        assert_eq!(config.initrd, None);
        assert_eq!(config.cmdline, DEFAULT_CMDLINE);
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
        assert_eq!(args.cmdline, "quiet");
        assert_eq!(args.vcpus, 4);
        assert_eq!(args.memory, 4096);
    }

    #[test]
    fn cli_run_without_kernel_is_refused() {
        assert!(Cli::try_parse_from(["cabin", "run"]).is_err());
    }

    #[test]
    fn cli_check_parses() {
        let cli = Cli::try_parse_from(["cabin", "check"]).unwrap();
        assert!(matches!(cli.command, Command::Check));
    }
}
