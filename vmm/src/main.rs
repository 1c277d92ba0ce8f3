//! The `cabin` binary: command line -> configuration -> VM -> exit status.

use std::process::ExitCode;

use clap::Parser;
use vmm::cli::{Cli, Command};
use vmm::config::VmConfig;
use vmm::{builder, error_chain, kvm, runner, EXIT_ERROR, EXIT_GUEST_FAILURE, EXIT_OK};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().filter_or("CABIN_LOG", "warn"))
        .format_target(false)
        .init();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check => check(),
        Command::Run(args) => run(VmConfig::from(args)),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn run(config: VmConfig) -> i32 {
    let vm = match builder::build_vm(&config) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("cabin: {}", error_chain(&e));
            return EXIT_ERROR;
        }
    };
    match runner::run_vm(vm) {
        Ok(reason) if reason.is_clean() => EXIT_OK,
        Ok(vmm::vcpu::StopReason::Signal(sig)) => {
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
