//! Scripted lifecycle tests: real VMs driven only through the API socket and
//! `cabin ctl`, as a shell script would. Run through `make test` (native KVM or the
//! sandbox), with `--ignored`.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{artifact, cabin_bin, http, rootfs_copy, scratch_dir, script_cmdline, Cabin};

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn state(sock: &Path) -> String {
    let (status, body) = http(sock, "GET", "/", None);
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    json["state"].as_str().unwrap().to_owned()
}

fn ctl(sock: &Path, action: &str) -> (i32, String, String) {
    let out = Command::new(cabin_bin())
        .args(["ctl", "--api-sock"])
        .arg(sock)
        .arg(action)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A guest that makes Ctrl-Alt-Del reboot at once, then prints a counter every 100 ms.
const TICKER: &str = "echo 1 > /proc/sys/kernel/ctrl-alt-del; i=0; \
                      while true; do echo TICK-$i; i=$((i + 1)); usleep 100000; done";

fn ticks(text: &str) -> Vec<u64> {
    // Only whole lines: a vCPU paused mid-line leaves "TICK-1" of "TICK-12" behind.
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| l.trim().strip_prefix("TICK-"))
        .filter_map(|n| n.parse().ok())
        .collect()
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn api_configure_start_pause_resume_ctrl_alt_del() {
    let dir = scratch_dir("lifecycle");
    let sock = dir.join("api.sock");
    let image = rootfs_copy(&dir);
    let mut cabin = Cabin::spawn(&["run", "--api-sock", sock.to_str().unwrap()]);
    common::wait_for_socket(&sock, &cabin);
    assert_eq!(state(&sock), "Not started");

    // Pause before start is refused with the state named.
    let (code, _, stderr) = ctl(&sock, "pause");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("Not started"), "{stderr}");

    let machine = r#"{"vcpu_count": 2, "mem_size_mib": 256}"#;
    assert_eq!(http(&sock, "PUT", "/machine-config", Some(machine)).0, 204);
    let boot = serde_json::json!({
        "kernel_image_path": artifact("CABIN_VMLINUX"),
        "boot_args": script_cmdline(TICKER),
    });
    assert_eq!(
        http(&sock, "PUT", "/boot-source", Some(&boot.to_string())).0,
        204
    );
    let drive = serde_json::json!({
        "drive_id": "rootfs",
        "path_on_host": image,
        "is_root_device": true,
        "is_read_only": false,
    });
    assert_eq!(
        http(&sock, "PUT", "/drives/rootfs", Some(&drive.to_string())).0,
        204
    );

    let (code, _, stderr) = ctl(&sock, "start");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(state(&sock), "Running");
    cabin.expect_stdout("TICK-3", BOOT_TIMEOUT);

    // Configuration changes and a second start are refused once running.
    let (status, body) = http(&sock, "PUT", "/machine-config", Some(machine));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("fault_message"), "{body}");
    assert_eq!(ctl(&sock, "start").0, 1);
    assert_eq!(ctl(&sock, "resume").0, 1);

    let (code, _, stderr) = ctl(&sock, "pause");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(state(&sock), "Paused");
    let at_pause = ticks(&cabin.stdout.text()).last().copied().unwrap();
    // A ticking guest prints ten lines a second; while paused it prints none. The
    // window is the assertion, not synchronization.
    assert!(!cabin
        .stdout
        .wait_for(&format!("TICK-{}", at_pause + 2), Duration::from_secs(2)));
    assert_eq!(
        ticks(&cabin.stdout.text()).last().copied().unwrap(),
        at_pause,
        "ticked while paused"
    );

    let (code, _, stderr) = ctl(&sock, "resume");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(state(&sock), "Running");
    cabin.expect_stdout(&format!("TICK-{}", at_pause + 3), BOOT_TIMEOUT);

    let (code, stdout, _) = ctl(&sock, "config");
    assert_eq!(code, 0);
    assert!(stdout.contains("\"vcpu_count\""), "{stdout}");
    assert!(stdout.contains("rootfs.ext4"), "{stdout}");

    let (code, _, stderr) = ctl(&sock, "ctrl-alt-del");
    assert_eq!(code, 0, "{stderr}");
    let status = cabin.wait_exit(BOOT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", cabin.stderr.text());
    assert!(!sock.exists(), "API socket left behind");
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn config_file_boots_the_same_guest() {
    let dir = scratch_dir("config-file");
    let image = rootfs_copy(&dir);
    let doc = serde_json::json!({
        "boot-source": {
            "kernel_image_path": artifact("CABIN_VMLINUX"),
            "boot_args": script_cmdline("echo CONFIG-FILE-NPROC=$(nproc)"),
        },
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
        "drives": [{
            "drive_id": "rootfs",
            "path_on_host": image,
            "is_root_device": true,
            "is_read_only": false,
        }],
    });
    let file = dir.join("vm.json");
    std::fs::write(&file, doc.to_string()).unwrap();

    let mut cabin = Cabin::spawn(&["run", "--config-file", file.to_str().unwrap(), "--no-api"]);
    let status = cabin.wait_exit(BOOT_TIMEOUT);
    let stdout = cabin.stdout.text();
    assert!(stdout.contains("CONFIG-FILE-NPROC=2"), "{stdout}");
    assert_eq!(status.code(), Some(0), "{}", cabin.stderr.text());
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn sigterm_stops_a_running_guest_and_removes_the_socket() {
    let dir = scratch_dir("sigterm");
    let sock = dir.join("api.sock");
    let image = rootfs_copy(&dir);
    let disk = format!("path={}", image.display());
    let kernel = artifact("CABIN_VMLINUX");
    let cmdline = script_cmdline(TICKER);
    let mut cabin = Cabin::spawn(&[
        "run",
        "--kernel",
        &kernel,
        "--disk",
        &disk,
        "--cmdline",
        &cmdline,
        "--api-sock",
        sock.to_str().unwrap(),
    ]);
    common::wait_for_socket(&sock, &cabin);
    // Options on the command line pre-fill the configuration; start boots it.
    assert_eq!(ctl(&sock, "start").0, 0);
    cabin.expect_stdout("TICK-1", BOOT_TIMEOUT);
    cabin.signal(libc::SIGTERM);
    let status = cabin.wait_exit(BOOT_TIMEOUT);
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert!(!sock.exists(), "API socket left behind");
}
