//! End-to-end console input: 8 KiB pasted at once into cabin's stdin reach a raw tty
//! in the guest intact, on the serial console (ttyS0) and on the virtio console
//! (hvc0). The guest's shell checksums exactly 8 KiB with `md5sum`; the host
//! compares with its own checksum of what it sent.
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
const PASTE_LEN: usize = 8192;

/// 8 KiB of text as a paste brings it: printable lines of varying length.
fn paste() -> Vec<u8> {
    (0..PASTE_LEN)
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

/// Boots the interactive initramfs with `extra` arguments, pastes 8 KiB into a raw
/// tty read by `head -c 8192 | md5sum`, and checks the guest's checksum.
fn paste_reaches_raw_tty(extra: &[&str], cmdline: &str) {
    let kernel = artifact("CABIN_VMLINUX");
    let initrd = artifact("CABIN_INITRAMFS");
    let mut args = vec!["run", "--kernel", &kernel, "--initrd", &initrd];
    args.extend_from_slice(extra);
    args.extend(["--cmdline", cmdline]);
    let mut cabin = Cabin::spawn_interactive(&args);
    cabin.expect_stdout("cabin: guest init ready", TIMEOUT);
    let input = paste();
    let expected = host_md5(&input);

    // The markers are computed by the shell, so the echo of the typed line cannot
    // match them: RAW-42 means the tty is raw and `head` is about to read.
    cabin.type_text(
        "stty raw -echo; echo RAW-$((6 * 7)); head -c 8192 | md5sum | \
         sed 's/^/MD5=/'; stty sane; echo PASTE-$((2 * 3))-DONE\n",
    );
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
    paste_reaches_raw_tty(&[], "console=ttyS0 reboot=k panic=-1 quiet");
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn virtio_console_8k_paste_reaches_raw_hvc0_intact() {
    paste_reaches_raw_tty(
        &["--console", "virtio"],
        "console=hvc0 reboot=k panic=-1 quiet",
    );
}
