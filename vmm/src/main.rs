//! The `cabin` binary: command line -> configuration -> VM -> exit status.

use std::process::ExitCode;

use clap::Parser;
use vmm::api::model::snapshot::LoadPlan;
use vmm::api::{model, server};
use vmm::cli::{Cli, Command, RunArgs, SnapshotAction, SnapshotArgs};
use vmm::config::VmConfig;
use vmm::seccomp::{self, ThreadFilter, ThreadKind};
use vmm::vcpu::StopReason;
use vmm::{
    error_chain, kvm, runner, snapshot, EXIT_ERROR, EXIT_GUEST_FAILURE, EXIT_GUEST_HALTED, EXIT_OK,
    EXIT_SHUTDOWN_TIMEOUT, EXIT_USAGE,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

fn main() -> ExitCode {
    vmm::prepare_process();
    vmm::logger::init();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check => check(),
        Command::Run(args) => run(args),
        Command::Ctl(args) => vmm::api::client::run_ctl(&args),
        Command::Snapshot(args) => snapshot_tool(&args),
        Command::Exec(args) => vmm::exec::run_exec(&args),
        Command::Cp(args) => vmm::exec::run_cp(&args),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn run(args: RunArgs) -> i32 {
    let api_sock = args.api_sock.clone();
    let config_file = args.config_file.clone();
    let filters = if args.no_seccomp {
        log::warn!("seccomp filters are off (--no-seccomp)");
        None
    } else {
        match seccomp::Filters::compile().and_then(|filters| {
            seccomp::install_sigsys_handler()?;
            Ok(filters)
        }) {
            Ok(filters) => Some(filters),
            Err(e) => {
                eprintln!("cabin: {}", error_chain(&e));
                return EXIT_ERROR;
            }
        }
    };
    if args.restore.is_some() && args.net.iter().any(|net| net.mac.is_some()) {
        eprintln!("cabin: --net with --restore takes only tap=NAME: the guest keeps the MAC it had in the snapshot");
        return EXIT_USAGE;
    }
    if let Some(vsock) = &args.vsock {
        match (args.restore.is_some(), vsock.cid.is_some()) {
            (true, true) => {
                eprintln!("cabin: --vsock with --restore takes only path=UDS: the guest keeps the context id it had in the snapshot");
                return EXIT_USAGE;
            }
            (false, false) => {
                eprintln!("cabin: --vsock needs cid=N, the guest's context id (3 or more): --vsock cid=3,path=UDS");
                return EXIT_USAGE;
            }
            _ => {}
        }
    }
    let restore = args.restore.as_ref().map(|dir| LoadPlan {
        snapshot_path: dir.join(snapshot::STATE_FILE),
        mem_file: dir.join(snapshot::MEMORY_FILE),
        track_dirty_pages: false,
        resume_vm: true,
        network_overrides: Vec::new(),
        positional_taps: args.net.iter().map(|net| net.tap.clone()).collect(),
        vsock_override: args.vsock.as_ref().map(|vsock| vsock.uds_path.clone()),
    });
    let mut config = VmConfig::from(args);
    if restore.is_some() {
        config.nets.clear();
    }
    if let Some(file) = &config_file {
        config = match model::load_config_file(file, config) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("cabin: {}", error_chain(&e));
                return EXIT_ERROR;
            }
        };
    }
    // Without an API socket, or with a config file, the VM boots at once.
    let boot_now = api_sock.is_none() || config_file.is_some();
    let (api, _server) = match &api_sock {
        Some(path) => match start_api(path, filters.as_ref().map(|f| f.program(ThreadKind::Api))) {
            Ok((endpoint, server)) => (Some(endpoint), Some(server)),
            Err(message) => {
                eprintln!("cabin: {message}");
                return EXIT_ERROR;
            }
        },
        None => (None, None),
    };
    let options = runner::RunOptions {
        boot_now,
        seccomp: filters,
        restore,
    };
    match runner::run(config, api, options) {
        Ok(StopReason::GuestShutdown) => {
            eprintln!("cabin: the guest powered off");
            EXIT_OK
        }
        Ok(reason) if reason.is_clean() => EXIT_OK,
        Ok(reason @ StopReason::ShutdownTimedOut(_)) => {
            eprintln!("cabin: {reason}");
            EXIT_SHUTDOWN_TIMEOUT
        }
        Ok(reason @ StopReason::GuestHalted) => {
            eprintln!("cabin: {reason}");
            EXIT_GUEST_HALTED
        }
        Ok(reason @ StopReason::SeccompFailed { .. }) => {
            eprintln!("cabin: {reason}");
            EXIT_ERROR
        }
        Ok(StopReason::Signal(sig)) => {
            eprintln!("cabin: stopped by signal {sig}");
            128 + sig
        }
        Ok(reason) => {
            eprintln!("cabin: {reason}");
            EXIT_GUEST_FAILURE
        }
        Err(e) => {
            eprintln!("cabin: {}", error_chain(&e));
            EXIT_ERROR
        }
    }
}

fn start_api(
    path: &std::path::Path,
    seccomp: Option<ThreadFilter>,
) -> Result<(runner::ApiEndpoint, server::ApiServer), String> {
    let (tx, requests) = std::sync::mpsc::channel();
    let wake = EventFd::new(EFD_NONBLOCK).map_err(|e| format!("Cannot create an eventfd: {e}"))?;
    let server_wake = wake
        .try_clone()
        .map_err(|e| format!("Cannot create an eventfd: {e}"))?;
    let server = server::start(path, tx, server_wake, seccomp).map_err(|e| error_chain(&e))?;
    Ok((runner::ApiEndpoint { requests, wake }, server))
}

fn snapshot_tool(args: &SnapshotArgs) -> i32 {
    match &args.action {
        SnapshotAction::Rebase {
            memory_path,
            diff_path,
        } => match snapshot::memory::rebase(memory_path, diff_path) {
            Ok(bytes) => {
                println!(
                    "{}: {} MiB of changed pages applied from {}",
                    memory_path.display(),
                    bytes >> 20,
                    diff_path.display()
                );
                EXIT_OK
            }
            Err(e) => {
                eprintln!("cabin: {}", error_chain(&e));
                EXIT_ERROR
            }
        },
    }
}

fn check() -> i32 {
    let lines = kvm::host_report();
    for line in &lines {
        println!(
            "{:<20} {:<4} {}",
            line.item,
            if line.ok { "ok" } else { "FAIL" },
            line.detail
        );
    }
    if lines.iter().all(|l| l.ok) {
        println!("result: guests can boot on this host");
        EXIT_OK
    } else {
        println!("result: guests cannot boot natively on this host");
        EXIT_ERROR
    }
}
