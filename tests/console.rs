//! End-to-end console input: 8 KiB pasted at once into cabin's stdin reach a raw tty
//! in the guest intact, on the serial console (ttyS0) and on the virtio console
//! (hvc0); and 256 KiB on hvc0 while the guest does not read for a few seconds
//! (more than the guest's tty, cabin and the device can buffer: cabin stops reading
//! stdin until the guest reads again, where it used to drop input). A script piped
//! into cabin before the guest boots, stdin closed at once, runs intact on both. The guest's shell checksums exactly the pasted
//! length with `md5sum`; the host compares with its own checksum of what it sent.
//!
//! These need the guest artifacts and native KVM or the nested sandbox; `make e2e`
//! runs them with `--ignored`.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{artifact, Cabin};

/// Bounds a hang only; boots in the nested sandbox take seconds.
const TIMEOUT: Duration = Duration::from_secs(300);
/// `len` bytes of text as a paste brings it: printable lines.
fn paste(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            if i % 97 == 96 {
                b'\n'
            } else {
                b' ' + (i * 53 % 95) as u8
            }
        })
        .collect()
}

/// `md5sum` of `data` on the host, as the guest's busybox prints it (hex digits).
fn host_md5(data: &[u8]) -> String {
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("md5sum on the host");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()[..32].to_owned()
}

/// How the guest takes the paste.
struct Paste<'a> {
    /// cabin arguments beyond the kernel and initramfs.
    extra: &'a [&'a str],
    cmdline: &'a str,
    /// Bytes pasted.
    len: usize,
    /// Seconds the guest waits, raw tty ready, before it starts reading: a guest
    /// that is not reading. Not synchronization: the result must not depend on it.
    stall_secs: u32,
}

/// Boots the interactive initramfs, pastes `len` bytes into a raw tty read by
/// `head -c LEN | md5sum`, and checks the guest's checksum.
fn paste_reaches_raw_tty(paste_spec: Paste<'_>) {
    let Paste {
        extra,
        cmdline,
        len,
        stall_secs,
    } = paste_spec;
    let kernel = artifact("CABIN_VMLINUX");
    let initrd = artifact("CABIN_INITRAMFS");
    let mut args = vec!["run", "--kernel", &kernel, "--initrd", &initrd];
    args.extend_from_slice(extra);
    args.extend(["--cmdline", cmdline]);
    let mut cabin = Cabin::spawn_interactive(&args);
    cabin.expect_stdout("cabin: guest init ready", TIMEOUT);
    let input = paste(len);
    let expected = host_md5(&input);

    // The markers are computed by the shell, so the echo of the typed line cannot
    // match them: RAW-42 means the tty is raw and `head` is about to read.
    cabin.type_text(&format!(
        "stty raw -echo; echo RAW-$((6 * 7)); sleep {stall_secs}; head -c {len} | md5sum | \
         sed 's/^/MD5=/'; stty sane; echo PASTE-$((2 * 3))-DONE\n"
    ));
    cabin.expect_stdout("RAW-42", TIMEOUT);
    cabin.type_text(std::str::from_utf8(&input).unwrap());
    let line = cabin
        .stdout
        .wait_for_line("MD5=", TIMEOUT)
        .unwrap_or_else(|| {
            panic!(
                "the guest did not checksum 8 KiB\n--- stdout ---\n{}\n--- stderr ---\n{}",
                cabin.stdout.text(),
                cabin.stderr.text()
            )
        });
    cabin.expect_stdout("PASTE-6-DONE", TIMEOUT);
    cabin.type_text("reboot -f\n");
    let status = cabin.wait_exit(TIMEOUT);

    assert_eq!(line.split_whitespace().next(), Some(expected.as_str()));
    assert_eq!(status.code(), Some(0), "{}", cabin.stderr.text());
    assert!(
        !cabin.stderr.text().contains("dropped"),
        "{}",
        cabin.stderr.text()
    );
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn serial_console_8k_paste_reaches_raw_tty_intact() {
    paste_reaches_raw_tty(Paste {
        extra: &[],
        cmdline: "console=ttyS0 reboot=k panic=-1 quiet",
        len: 8192,
        stall_secs: 0,
    });
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn virtio_console_8k_paste_reaches_raw_hvc0_intact() {
    paste_reaches_raw_tty(Paste {
        extra: &["--console", "virtio"],
        cmdline: "console=hvc0 reboot=k panic=-1 quiet",
        len: 8192,
        stall_secs: 0,
    });
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn virtio_console_256k_paste_to_a_stalled_guest_reaches_raw_hvc0_intact() {
    paste_reaches_raw_tty(Paste {
        extra: &["--console", "virtio"],
        cmdline: "console=hvc0 reboot=k panic=-1 quiet",
        len: 256 * 1024,
        stall_secs: 3,
    });
}

/// Writes a short script into cabin's stdin at once, before the guest boots, then
/// closes it, as `printf '...' | cabin run` does; the guest's shell must run it.
fn piped_script_runs(extra: &[&str], cmdline: &str) {
    let kernel = artifact("CABIN_VMLINUX");
    let initrd = artifact("CABIN_INITRAMFS");
    let mut args = vec!["run", "--kernel", &kernel, "--initrd", &initrd];
    args.extend_from_slice(extra);
    args.extend(["--cmdline", cmdline]);
    let mut cabin = Cabin::spawn_interactive(&args);

    cabin.type_text("echo piped-$((6 * 7))\nreboot -f\n");
    cabin.close_stdin();
    let status = cabin.wait_exit(TIMEOUT);

    let stdout = cabin.stdout.text();
    assert!(
        stdout.contains("piped-42"),
        "the piped script did not run intact\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        cabin.stderr.text()
    );
    assert_eq!(status.code(), Some(0), "{}", cabin.stderr.text());
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn serial_console_script_piped_before_boot_runs_intact() {
    piped_script_runs(&[], "console=ttyS0 reboot=k panic=-1 quiet");
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn virtio_console_script_piped_before_boot_runs_intact() {
    piped_script_runs(
        &["--console", "virtio"],
        "console=hvc0 reboot=k panic=-1 quiet",
    );
}
