//! End-to-end test of a distribution's own kernel: Debian's packaged kernel
//! (`linux-image-amd64`'s `vmlinuz`, a bzImage, untouched) with the initramfs
//! Debian's initramfs-tools made for it (`resources/rootfs/debian.sh`), root on
//! the project's Debian image.
//!
//! That kernel has virtio-mmio only as a module and no `virtio_mmio.device=`
//! support, so it finds the disk only through cabin's ACPI tables; the image
//! carries the kernel's modules, so udev loads the rest (the ACPI power button
//! among them). The guest boots to systemd's multi-user target, `systemctl
//! poweroff` on the serial console's autologin shell powers it off through ACPI,
//! and cabin, with its seccomp filters on, exits 0. Run through `make test`
//! (native KVM or the sandbox), with `--ignored`.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use common::{artifact, scratch_dir, Cabin};

/// Bounds a hang only: under the nested sandbox this boot takes about a minute.
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(300);
/// No `reboot=`: the guest leaves through ACPI's sleep register, not a reset.
const CMDLINE: &str = "console=ttyS0 panic=-1 quiet root=/dev/vda rw";
/// bash's prompt for root in Debian's default `/root/.bashrc` (`\h:\w\$ `).
const PROMPT: &str = "cabin-debian:~# ";

#[test]
#[ignore = "needs the Debian image and kernel and native KVM or the sandbox: make test"]
fn debian_kernel_boots_to_multi_user_and_powers_off_with_status_0() {
    let dir = scratch_dir("distro");
    let image = dir.join("debian.ext4");
    std::fs::copy(artifact("CABIN_DEBIAN_ROOTFS"), &image).unwrap();
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
