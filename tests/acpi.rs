//! End-to-end tests of the ACPI machine: the guest powers off through the FADT's
//! sleep register, `cabin ctl shutdown` presses the power button (GED), the MADT
//! brings up more vCPUs than the old MP table could hold, and `--no-acpi` falls back
//! to the MP table and the command line. Run through `make test` (native KVM or the
//! sandbox), with `--ignored`.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{artifact, run_cabin, scratch_dir, Cabin};

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const QUIET: &str = "console=ttyS0 reboot=k panic=-1 quiet";

fn ctl(sock: &Path, args: &[&str]) -> (i32, String) {
    let out = common::ctl(sock, args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts the interactive busybox initramfs behind an API socket and boots it
/// with `cabin ctl start`; returns once its shell is ready.
fn interactive_guest_with_api(dir: &Path, extra: &[&str]) -> (Cabin, std::path::PathBuf) {
    let sock = dir.join("api.sock");
    let mut args = vec!["--api-sock", sock.to_str().unwrap()];
    args.extend(extra);
    let cabin = common::spawn_interactive_initramfs(&args);
    common::wait_for_socket(&sock, &cabin);
    let (code, stderr) = ctl(&sock, &["start"]);
    assert_eq!(code, 0, "{stderr}");
    cabin.expect_stdout("cabin: guest init ready", BOOT_TIMEOUT);
    (cabin, sock)
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn guest_poweroff_ends_cabin_with_zero_and_says_so() {
    let _alone = alone();
    let mut cabin = common::spawn_interactive_initramfs(&[]);
    cabin.expect_stdout("cabin: guest init ready", BOOT_TIMEOUT);
    cabin.type_text("poweroff -f\n");
    let status = cabin.wait_exit(BOOT_TIMEOUT);
    let stderr = cabin.stderr.text();
    assert_eq!(status.code(), Some(0), "{stderr}");
    // The kernel went through its power-off path (not a reboot or a halt).
    assert!(
        cabin.stdout.text().contains("reboot: Power down"),
        "{}",
        cabin.stdout.text()
    );
    assert!(stderr.contains("cabin: the guest powered off"), "{stderr}");
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn ctl_shutdown_presses_the_power_button_and_the_guest_powers_off() {
    let _alone = alone();
    let dir = scratch_dir("acpi-shutdown");
    let (mut cabin, sock) = interactive_guest_with_api(&dir, &[]);
    let (code, stderr) = ctl(&sock, &["shutdown", "--timeout", "120"]);
    assert_eq!(code, 0, "cabin ctl shutdown: {stderr}");
    let status = cabin.wait_exit(BOOT_TIMEOUT);
    // The guest's own handler ran (the busybox init's power-button watcher).
    cabin.expect_stdout("cabin: power button pressed, powering off", BOOT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", cabin.stderr.text());
    assert!(cabin.stderr.text().contains("the guest powered off"));
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn ctl_shutdown_stops_a_guest_that_ignores_the_button_after_the_timeout() {
    let _alone = alone();
    // Without ACPI tables the guest has no power button to notice.
    let dir = scratch_dir("acpi-shutdown-timeout");
    let (mut cabin, sock) = interactive_guest_with_api(&dir, &["--no-acpi"]);
    let started = Instant::now();
    let (code, stderr) = ctl(&sock, &["shutdown", "--timeout", "3"]);
    assert_eq!(
        code, 0,
        "cabin ctl shutdown waits for cabin to exit: {stderr}"
    );
    assert!(started.elapsed() >= Duration::from_secs(3));
    let status = cabin.wait_exit(BOOT_TIMEOUT);
    let stderr = cabin.stderr.text();
    assert_eq!(status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("the guest did not power off within 3 s of the power button"),
        "{stderr}"
    );
}

/// Boots the test initramfs and returns what it reports as `nproc`.
fn nproc(vcpus: &str, extra: &[&str]) -> String {
    let kernel = artifact("CABIN_VMLINUX");
    let initrd = artifact("CABIN_TEST_INITRAMFS");
    let mut args = vec![
        "run",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--cmdline",
        QUIET,
        "--vcpus",
        vcpus,
        "--memory",
        "512",
    ];
    args.extend(extra);
    let (status, stdout, stderr) = run_cabin(&args, BOOT_TIMEOUT * 2);
    assert_eq!(status.code(), Some(0), "{stdout}\n{stderr}");
    stdout
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("CABIN-NPROC="))
        .unwrap_or_else(|| panic!("no CABIN-NPROC\n{stdout}"))
        .to_owned()
}

/// The tests of this file run one at a time (their guests are quick): the power-off
/// and timeout checks then do not share the sandbox's two CPUs with another boot.
static MANY_VCPUS: Mutex<()> = Mutex::new(());

fn alone() -> MutexGuard<'static, ()> {
    MANY_VCPUS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn without_acpi_the_mp_table_still_describes_the_vcpus() {
    let _alone = alone();
    assert_eq!(nproc("2", &["--no-acpi"]), "2");
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn acpi_describes_the_virtio_devices_the_guest_binds() {
    let _alone = alone();
    // The command line also names them, for kernels without ACPI; the guest must bind
    // each device once, through ACPI (LNRO0005), and still use it.
    let dir = scratch_dir("acpi-devices");
    let image = common::rootfs_copy(&dir);
    let kernel = artifact("CABIN_VMLINUX");
    let disk = format!("path={}", image.display());
    let script = "ls /sys/bus/acpi/devices/ | grep -c LNRO0005 | sed 's/^/LNRO=/'; \
                  ls /sys/bus/platform/drivers/virtio-mmio/ | grep -c LNRO0005 | sed 's/^/BOUND=/'; \
                  cat /sys/block/vda/size | sed 's/^/VDA-SECTORS=/'";
    let cmdline = common::script_cmdline(script);
    let (status, stdout, stderr) = run_cabin(
        &[
            "run",
            "--kernel",
            &kernel,
            "--disk",
            &disk,
            "--cmdline",
            &cmdline,
        ],
        BOOT_TIMEOUT,
    );
    assert_eq!(status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("LNRO=1"), "{stdout}");
    assert!(stdout.contains("BOUND=1"), "{stdout}");
    assert!(stdout.contains("VDA-SECTORS="), "{stdout}");
    assert!(stdout.contains("CABIN-SH-EXIT=0"), "{stdout}");
}
