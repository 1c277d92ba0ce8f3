//! End-to-end boots of the project's guest kernel and busybox initramfs.
//!
//! These need a host whose KVM runs guest kernels natively (`cabin check` exits 0) or
//! the nested sandbox, and the guest artifacts; `make test` provides both and runs
//! them with `--ignored`. The test initramfs prints what the guest itself sees
//! (CABIN-NPROC, CABIN-MEMTOTAL-KB, CABIN-CMDLINE) and reboots.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use common::{artifact, run_cabin};

/// Boots inside the nested sandbox take seconds; leave plenty of room for a loaded CI
/// machine. The timeout only bounds a hang, it is not a performance assertion.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const QUIET: &str = "console=ttyS0 reboot=k panic=-1 quiet";

/// What the test init reported.
struct Report {
    nproc: u32,
    mem_total_kib: u64,
    cmdline: String,
}

fn report_field<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix(key))
        .unwrap_or_else(|| panic!("guest did not report {key}\n{stdout}"))
}

fn boot_and_report(kernel_var: &str, vcpus: u32, memory_mib: u64, cmdline: Option<&str>) -> Report {
    let kernel = artifact(kernel_var);
    let initrd = artifact("CABIN_TEST_INITRAMFS");
    let vcpus = vcpus.to_string();
    let memory = memory_mib.to_string();
    let mut args = vec![
        "run", "--kernel", &kernel, "--initrd", &initrd, "--vcpus", &vcpus, "--memory", &memory,
    ];
    if let Some(cmdline) = cmdline {
        args.extend(["--cmdline", cmdline]);
    }
    let (status, stdout, stderr) = run_cabin(&args, BOOT_TIMEOUT);
    assert!(
        stdout.contains("CABIN-DONE"),
        "guest did not finish\n{stdout}\n{stderr}"
    );
    assert_eq!(
        status.code(),
        Some(0),
        "guest reboot must end cabin with 0\n{stderr}"
    );
    Report {
        nproc: report_field(&stdout, "CABIN-NPROC=").parse().unwrap(),
        mem_total_kib: report_field(&stdout, "CABIN-MEMTOTAL-KB=").parse().unwrap(),
        cmdline: report_field(&stdout, "CABIN-CMDLINE=").to_owned(),
    }
}

/// MemTotal is guest RAM minus what the kernel reserves for itself: between 75% and
/// 100% of what was given, for these small kernels.
fn assert_mem_total(report: &Report, memory_mib: u64) {
    let given_kib = memory_mib * 1024;
    assert!(
        report.mem_total_kib <= given_kib && report.mem_total_kib >= given_kib * 3 / 4,
        "MemTotal {} KiB for {memory_mib} MiB",
        report.mem_total_kib
    );
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn vmlinux_one_vcpu_256m_reports_what_it_was_given() {
    let cmdline = format!("{QUIET} cabin.marker=vmlinux-1");
    let report = boot_and_report("CABIN_VMLINUX", 1, 256, Some(&cmdline));
    assert_eq!(report.nproc, 1);
    assert_mem_total(&report, 256);
    assert_eq!(report.cmdline, cmdline);
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn vmlinux_four_vcpus_4g_sees_all_cpus_and_memory_above_the_hole() {
    let report = boot_and_report("CABIN_VMLINUX", 4, 4096, Some(QUIET));
    assert_eq!(report.nproc, 4);
    assert_mem_total(&report, 4096);
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn bzimage_one_vcpu_256m_reports_what_it_was_given() {
    let cmdline = format!("{QUIET} cabin.marker=bzimage-1");
    let report = boot_and_report("CABIN_BZIMAGE", 1, 256, Some(&cmdline));
    assert_eq!(report.nproc, 1);
    assert_mem_total(&report, 256);
    assert_eq!(report.cmdline, cmdline);
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn bzimage_four_vcpus_4g_sees_all_cpus_and_memory_above_the_hole() {
    let report = boot_and_report("CABIN_BZIMAGE", 4, 4096, Some(QUIET));
    assert_eq!(report.nproc, 4);
    assert_mem_total(&report, 4096);
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn defaults_give_one_vcpu_128m_and_the_default_cmdline() {
    let report = boot_and_report("CABIN_VMLINUX", 1, 128, None);
    assert_eq!(report.nproc, 1);
    assert_mem_total(&report, 128);
    assert_eq!(report.cmdline, "console=ttyS0 reboot=k panic=-1");
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn guest_panic_with_panic_minus_one_ends_cabin_with_zero() {
    let kernel = artifact("CABIN_VMLINUX");
    let initrd = artifact("CABIN_TEST_INITRAMFS");
    let cmdline = format!("{QUIET} cabin.test=panic");
    let (status, stdout, stderr) = run_cabin(
        &[
            "run",
            "--kernel",
            &kernel,
            "--initrd",
            &initrd,
            "--cmdline",
            &cmdline,
        ],
        BOOT_TIMEOUT,
    );
    assert!(
        stdout.contains("CABIN-READY"),
        "{status}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    );
    assert!(
        !stdout.contains("CABIN-DONE"),
        "the guest should have panicked first\n{stdout}"
    );
    assert!(stdout.contains("Kernel panic"), "{stdout}");
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn interactive_shell_answers_typed_commands_and_reboots() {
    let mut cabin = common::spawn_interactive_initramfs(&[]);
    cabin.expect_stdout("cabin: guest init ready", BOOT_TIMEOUT);
    // The sum is computed by the guest's shell: the echo of the typed line alone
    // cannot produce it.
    cabin.type_text("echo typed-$((6 * 7))\n");
    cabin.expect_stdout("typed-42", BOOT_TIMEOUT);
    cabin.type_text("reboot -f\n");
    let status = cabin.wait_exit(BOOT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", cabin.stderr.text());
}
