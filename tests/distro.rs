//! End-to-end test of a distribution's own kernel: Debian's packaged kernel
//! (`linux-image-amd64`'s `vmlinuz`, a bzImage, untouched) with the initramfs
//! Debian's initramfs-tools made for it (`resources/rootfs/debian.sh`), root on
//! the project's Debian image.
//!
//! That kernel has virtio-mmio only as a module and no `virtio_mmio.device=`
//! support, so it finds the disk only through cabin's ACPI tables; the image
//! carries the kernel's modules, so udev loads the rest (the ACPI power button
//! among them). The guest boots to systemd's multi-user target and powers off
//! through ACPI, from `systemctl poweroff` on the serial console's autologin
//! shell or from the power button (`cabin ctl shutdown`, which the `button`
//! module reports and systemd-logind acts on); cabin, with its seccomp filters
//! on, exits 0. Before the power button, `cabin exec` reaches the image's
//! cabin-agent.service over the vsock the config file gives (Debian's kernel
//! loads its vsock transport as a module). Run through `make test` (native KVM or
//! the sandbox), with `--ignored`.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::{artifact, ctl, scratch_dir, Cabin};

/// Bounds a hang only: under the nested sandbox this boot takes about a minute.
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(300);
/// No `reboot=`: the guest leaves through ACPI's sleep register, not a reset.
const CMDLINE: &str = "console=ttyS0 panic=-1 quiet root=/dev/vda rw";
/// bash's prompt for root in Debian's default `/root/.bashrc` (`\h:\w\$ `).
const PROMPT: &str = "cabin-debian:~# ";

/// A private, writable copy of the Debian image in `dir`.
/// The tests of this file run one at a time: two Debian guests of 2 vCPUs each
/// booting at once in the nested sandbox starve each other (a CI run saw a guest's
/// soft lockup during shutdown that way; alone, the same test passes).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn alone() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn debian_copy(dir: &Path) -> PathBuf {
    let image = dir.join("debian.ext4");
    std::fs::copy(artifact("CABIN_DEBIAN_ROOTFS"), &image).unwrap();
    image
}

/// Waits for the image's boot marker and checks systemd's state.
fn expect_multi_user(cabin: &Cabin) {
    let state = cabin
        .stdout
        .wait_for_line("CABIN-DEBIAN-STATE=", BOOT_TIMEOUT)
        .unwrap_or_else(|| {
            panic!(
                "systemd did not finish booting\n{}\n{}",
                cabin.stdout.text(),
                cabin.stderr.text()
            )
        });
    assert!(
        state == "running" || state == "degraded",
        "systemd state {state:?}\n{}",
        cabin.stdout.text()
    );
}

#[test]
#[ignore = "needs the Debian image and kernel and native KVM or the sandbox: make test"]
fn debian_kernel_boots_to_multi_user_and_powers_off_with_status_0() {
    let _alone = alone();
    let dir = scratch_dir("distro");
    let image = debian_copy(&dir);
    let kernel = artifact("CABIN_DEBIAN_VMLINUZ");
    let initrd = artifact("CABIN_DEBIAN_INITRD");
    let disk = format!("path={}", image.display());
    let mut cabin = Cabin::spawn_interactive(&[
        "run",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--disk",
        &disk,
        "--memory",
        "512",
        "--vcpus",
        "2",
        "--cmdline",
        CMDLINE,
    ]);

    expect_multi_user(&cabin);
    cabin.expect_stdout(PROMPT, BOOT_TIMEOUT);
    cabin.type_text("systemctl poweroff\n");
    let status = cabin.wait_exit(POWEROFF_TIMEOUT);

    assert_eq!(
        status.code(),
        Some(0),
        "a guest poweroff must end cabin with 0\n{}\n{}",
        cabin.stdout.text(),
        cabin.stderr.text()
    );
}

#[test]
#[ignore = "needs the Debian image and kernel and native KVM or the sandbox: make test"]
fn debian_kernel_powers_off_on_the_power_button_with_status_0() {
    let _alone = alone();
    let dir = scratch_dir("distro-button");
    let image = debian_copy(&dir);
    let sock = dir.join("api.sock");
    // A config file boots at once; the API socket is bound before the guest starts,
    // so it exists by the time the guest reports the multi-user target.
    let config = serde_json::json!({
        "boot-source": {
            "kernel_image_path": artifact("CABIN_DEBIAN_VMLINUZ"),
            "initrd_path": artifact("CABIN_DEBIAN_INITRD"),
            "boot_args": CMDLINE,
        },
        "machine-config": { "vcpu_count": 2, "mem_size_mib": 512 },
        "drives": [{
            "drive_id": "rootfs",
            "path_on_host": image,
            "is_root_device": true,
            "is_read_only": false,
        }],
        "vsock": { "guest_cid": 3, "uds_path": dir.join("v.sock") },
    });
    let config_path = dir.join("vm.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let mut cabin = Cabin::spawn(&[
        "run",
        "--config-file",
        config_path.to_str().unwrap(),
        "--api-sock",
        sock.to_str().unwrap(),
    ]);
    expect_multi_user(&cabin);

    let exec = std::process::Command::new(common::cabin_bin())
        .args([
            "exec",
            "--api-sock",
            sock.to_str().unwrap(),
            "--timeout",
            "120",
            "--",
        ])
        .args([
            "sh",
            "-c",
            "systemctl is-active cabin-agent; cat /etc/debian_version",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&exec.stdout);
    assert!(
        exec.status.success() && stdout.starts_with("active\n12."),
        "cabin exec in Debian: {:?}\n{stdout}\n{}\n{}",
        exec.status,
        String::from_utf8_lossy(&exec.stderr),
        cabin.stderr.text()
    );

    let out = ctl(&sock, &["shutdown", "--timeout", "600"]);
    let status = cabin.wait_exit(POWEROFF_TIMEOUT);

    assert_eq!(
        out.status.code(),
        Some(0),
        "cabin ctl shutdown: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        status.code(),
        Some(0),
        "the power button must power the guest off cleanly\n{}\n{}",
        cabin.stdout.text(),
        cabin.stderr.text()
    );
    assert!(
        cabin.stderr.text().contains("the guest powered off"),
        "{}",
        cabin.stderr.text()
    );
}
