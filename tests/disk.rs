//! End-to-end tests of virtio-blk and virtio-console: boot the project's kernel from
//! the busybox ext4 image on /dev/vda (no initrd) and check, from the host, what the
//! guest wrote; boot the Debian image to systemd's multi-user target.
//!
//! The busybox image's init runs the shell script given base64-encoded as
//! `cabin.sh=` on the kernel command line, prints `CABIN-SH-EXIT=<status>`, syncs
//! and reboots. Run through `make test` (native KVM or the sandbox), with
//! `--ignored`.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{artifact, rootfs_copy, run_cabin, scratch_dir, script_cmdline, Cabin};

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const DEBIAN_TIMEOUT: Duration = Duration::from_secs(900);

/// Boots the busybox rootfs with `disks` (first is root) and runs `script` in the
/// guest; returns what the console showed. Asserts the script exited 0 unless told.
fn run_script(disks: &[String], script: &str) -> String {
    let kernel = artifact("CABIN_VMLINUX");
    let cmdline = script_cmdline(script);
    let mut args = vec!["run", "--kernel", &kernel, "--cmdline", &cmdline];
    for disk in disks {
        args.extend(["--disk", disk]);
    }
    let (status, stdout, stderr) = run_cabin(&args, BOOT_TIMEOUT);
    assert!(
        stdout.contains("CABIN-ROOTFS-READY"),
        "guest did not boot from /dev/vda\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("CABIN-SH-EXIT="),
        "guest script did not finish\n{stdout}\n{stderr}"
    );
    assert_eq!(status.code(), Some(0), "{stderr}");
    stdout
}

fn debugfs_cat(image: &Path, path: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {path}")])
        .arg(image)
        .output()
        .expect("debugfs (e2fsprogs) is needed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn guest_write_to_root_disk_lands_in_the_image() {
    let dir = scratch_dir("disk-write");
    let image = rootfs_copy(&dir);
    let disk = format!("path={}", image.display());

    let stdout = run_script(
        &[disk],
        "echo \"payload-$((40 + 2)) from the guest\" > /written-by-guest.txt && sync",
    );

    assert!(stdout.contains("CABIN-SH-EXIT=0"), "{stdout}");
    assert_eq!(
        debugfs_cat(&image, "/written-by-guest.txt"),
        "payload-42 from the guest\n"
    );
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn guest_reads_the_exact_bytes_of_a_second_disk() {
    let dir = scratch_dir("disk-read");
    let image = rootfs_copy(&dir);
    let data = dir.join("data.img");
    let mut bytes = vec![0u8; 1 << 20];
    bytes[..16].copy_from_slice(b"CABIN-DATA-16B!\n");
    bytes[4096..4096 + 16].copy_from_slice(b"second-block-ok\n");
    std::fs::write(&data, &bytes).unwrap();

    let stdout = run_script(
        &[format!("path={}", image.display()), format!("path={}", data.display())],
        "head -c 16 /dev/vdb; dd if=/dev/vdb bs=4096 skip=1 count=1 2>/dev/null | head -c 16; cat /sys/block/vdb/size",
    );

    assert!(stdout.contains("CABIN-DATA-16B!"), "{stdout}");
    assert!(stdout.contains("second-block-ok"), "{stdout}");
    // 1 MiB = 2048 sectors of 512 bytes.
    assert!(stdout.lines().any(|l| l.trim() == "2048"), "{stdout}");
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn readonly_disk_refuses_writes_and_stays_unchanged() {
    let dir = scratch_dir("disk-ro");
    let image = rootfs_copy(&dir);
    let data = dir.join("ro.img");
    let before: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&data, &before).unwrap();

    let stdout = run_script(
        &[format!("path={}", image.display()), format!("path={},readonly=on", data.display())],
        "echo RO=$(cat /sys/block/vdb/ro); \
         if dd if=/dev/zero of=/dev/vdb bs=4096 count=1 oflag=direct 2>/dev/null; then echo WRITE=ok; else echo WRITE=failed; fi; \
         sync",
    );

    assert!(stdout.contains("RO=1"), "{stdout}");
    assert!(stdout.contains("WRITE=failed"), "{stdout}");
    assert!(
        std::fs::read(&data).unwrap() == before,
        "read-only image changed"
    );
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn two_disks_report_their_ids() {
    let dir = scratch_dir("disk-ids");
    let image = rootfs_copy(&dir);
    let data = dir.join("data.img");
    std::fs::write(&data, vec![0u8; 1 << 20]).unwrap();

    let stdout = run_script(
        &[
            format!("path={},id=rootdisk", image.display()),
            format!("path={},id=scratch-17", data.display()),
        ],
        "echo ID-A=$(cat /sys/block/vda/serial); echo ID-B=$(cat /sys/block/vdb/serial)",
    );

    assert!(stdout.contains("ID-A=rootdisk"), "{stdout}");
    assert!(stdout.contains("ID-B=scratch-17"), "{stdout}");
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn cache_writeback_offers_flushes_and_unsafe_does_not() {
    let dir = scratch_dir("disk-cache");
    let image = rootfs_copy(&dir);
    let data = dir.join("data.img");
    std::fs::write(&data, vec![0u8; 1 << 20]).unwrap();

    // The guest's block layer says "write back" when the device offers flushes.
    let stdout = run_script(
        &[
            format!("path={},cache=writeback", image.display()),
            format!("path={}", data.display()),
        ],
        "echo CACHE-A=$(cat /sys/block/vda/queue/write_cache); \
         echo CACHE-B=$(cat /sys/block/vdb/queue/write_cache)",
    );

    assert!(stdout.contains("CACHE-A=write back"), "{stdout}");
    assert!(stdout.contains("CACHE-B=write through"), "{stdout}");
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn virtio_console_echoes_a_typed_line() {
    let dir = scratch_dir("hvc");
    let image = rootfs_copy(&dir);
    let kernel = artifact("CABIN_VMLINUX");
    let disk = format!("path={}", image.display());
    let mut cabin = Cabin::spawn_interactive(&[
        "run",
        "--kernel",
        &kernel,
        "--disk",
        &disk,
        "--console",
        "virtio",
        "--cmdline",
        "console=hvc0 reboot=k panic=-1 quiet root=/dev/vda rw",
    ]);
    cabin.expect_stdout("CABIN-ROOTFS-READY", BOOT_TIMEOUT);
    cabin.type_text("echo hvc-$((6 * 7)) on $(tty)\n");
    cabin.expect_stdout("hvc-42 on /dev/", BOOT_TIMEOUT);
    cabin.type_text("cat /sys/class/tty/console/active\n");
    cabin.expect_stdout("hvc0", BOOT_TIMEOUT);
    cabin.type_text("reboot -f\n");
    let status = cabin.wait_exit(BOOT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", cabin.stderr.text());
}

#[test]
#[ignore = "needs the Debian image and native KVM or the sandbox: make test"]
fn debian_image_reaches_multi_user_target_and_shuts_down_on_the_power_button() {
    let dir = scratch_dir("debian");
    let image = dir.join("debian.ext4");
    std::fs::copy(artifact("CABIN_DEBIAN_ROOTFS"), &image).unwrap();
    let kernel = artifact("CABIN_VMLINUX");
    let disk = format!("path={}", image.display());
    let sock = dir.join("api.sock");
    let mut cabin = Cabin::spawn(&[
        "run",
        "--kernel",
        &kernel,
        "--disk",
        &disk,
        "--memory",
        "512",
        "--vcpus",
        "2",
        "--cmdline",
        "console=ttyS0 reboot=k panic=-1 quiet root=/dev/vda rw",
        "--api-sock",
        sock.to_str().unwrap(),
    ]);
    common::wait_for_socket(&sock, &cabin);
    let ctl = |args: &[&str]| {
        let out = common::ctl(&sock, args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stderr)
    };
    let (code, stderr) = ctl(&["start"]);
    assert_eq!(code, Some(0), "{stderr}");
    let state = cabin
        .stdout
        .wait_for_line("CABIN-DEBIAN-STATE=", DEBIAN_TIMEOUT)
        .unwrap_or_else(|| panic!("systemd did not finish booting\n{}", cabin.stdout.text()));
    let stdout = cabin.stdout.text();
    assert!(
        state == "running" || state == "degraded",
        "systemd state {state:?}\n{stdout}"
    );
    // The power button: systemd stops its units and powers the machine off.
    let (code, stderr) = ctl(&["shutdown", "--timeout", "600"]);
    assert_eq!(code, Some(0), "cabin ctl shutdown: {stderr}");
    let status = cabin.wait_exit(BOOT_TIMEOUT);
    let stdout = cabin.stdout.text();
    assert_eq!(status.code(), Some(0), "{stdout}\n{}", cabin.stderr.text());
    assert!(stdout.contains("reboot: Power down"), "{stdout}");
    assert!(cabin.stderr.text().contains("the guest powered off"));
}
