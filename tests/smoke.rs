//! KVM smoke tests with tiny hand-assembled guests. They use only moves, port I/O and
//! `hlt`, so they run on any /dev/kvm, including software hypervisors that cannot boot
//! Linux. They go through the whole `cabin run` path: ELF loading, page tables, GDT,
//! 64-bit entry, the serial port, the i8042 and the exit codes.

#[path = "common/mod.rs"]
mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{asm, assert_counts_on, letters, run_cabin, scratch_dir, tiny_elf, write_file, Cabin};

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn tiny_guest_prints_on_serial_and_resets_with_status_zero() {
    let dir = scratch_dir("smoke-reset");
    let code = asm::print_then_reset("hello from a tiny guest\n");
    let kernel = write_file(&dir, "tiny.elf", &tiny_elf(&code));

    let (status, stdout, stderr) =
        run_cabin(&["run", "--kernel", &kernel, "--memory", "32"], TIMEOUT);

    assert_eq!(stdout, "hello from a tiny guest\n", "stderr: {stderr}");
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stderr, "");
}

#[test]
fn tiny_guest_on_four_vcpus_prints_and_resets() {
    let dir = scratch_dir("smoke-smp");
    let code = asm::print_then_reset("smp ok\n");
    let kernel = write_file(&dir, "tiny.elf", &tiny_elf(&code));

    let (status, stdout, stderr) = run_cabin(
        &["run", "--kernel", &kernel, "--memory", "32", "--vcpus", "4"],
        TIMEOUT,
    );

    assert_eq!(stdout, "smp ok\n", "stderr: {stderr}");
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
}

#[test]
fn tiny_guest_that_halts_with_interrupts_off_ends_cabin_with_status_5() {
    let dir = scratch_dir("smoke-halt");
    let code = [asm::serial_print("halting\n"), asm::halt_forever()].concat();
    let kernel = write_file(&dir, "tiny.elf", &tiny_elf(&code));

    let (status, stdout, stderr) = run_cabin(
        &["run", "--kernel", &kernel, "--memory", "32", "--vcpus", "2"],
        TIMEOUT,
    );

    // Nothing can wake that vCPU, and the second one was never started.
    assert_eq!(stdout, "halting\n");
    assert_eq!(status.code(), Some(5), "stderr: {stderr}");
    assert_eq!(
        stderr,
        "cabin: the guest halted: every vCPU stopped with interrupts off \
         (halt, or poweroff without ACPI)\n"
    );
}

#[test]
fn tiny_guest_that_idles_with_interrupts_on_keeps_running_until_sigterm() {
    let dir = scratch_dir("smoke-idle");
    let code = [asm::serial_print("idling\n"), asm::idle_forever()].concat();
    let kernel = write_file(&dir, "tiny.elf", &tiny_elf(&code));

    let mut cabin = Cabin::spawn(&["run", "--kernel", &kernel, "--memory", "32"]);
    cabin.expect_stdout("idling\n", TIMEOUT);
    // An idle guest waits for interrupts: it must not end the VM by itself, across
    // several of cabin's halt checks (one a second).
    assert!(!cabin.stdout.wait_closed(Duration::from_millis(3500)));
    cabin.signal(libc::SIGTERM);
    let status = cabin.wait_exit(TIMEOUT);

    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert_eq!(cabin.stderr.text(), "cabin: stopped by signal 15\n");
}

#[test]
fn tiny_guest_triple_fault_exits_nonzero_with_reason_and_rip() {
    let dir = scratch_dir("smoke-fault");
    let code = [asm::serial_print("faulting\n"), asm::triple_fault()].concat();
    let kernel = write_file(&dir, "tiny.elf", &tiny_elf(&code));

    let (status, stdout, stderr) =
        run_cabin(&["run", "--kernel", &kernel, "--memory", "32"], TIMEOUT);

    assert_eq!(stdout, "faulting\n");
    assert_eq!(status.code(), Some(3), "stderr: {stderr}");
    // Hardware KVM reports the triple fault; a software hypervisor may instead fail to
    // emulate the faulting instruction. Either way: one line, the exit and the RIP.
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("cabin: guest triple fault on vCPU 0 (KVM_EXIT_SHUTDOWN) at RIP 0x")
            || stderr.starts_with("cabin: KVM internal error on vCPU 0"),
        "{stderr}"
    );
    assert!(stderr.contains("RIP 0x"), "{stderr}");
}

#[test]
fn tiny_guest_that_faults_right_after_its_reset_still_ends_with_status_0() {
    // Linux tries other ways to reboot when the first does not take at once, down
    // to a jump into the (absent) BIOS or a deliberate triple fault: the reset it
    // asked for first must win, however late the VMM thread reads it.
    let dir = scratch_dir("smoke-reset-fault");
    let code = [
        asm::serial_print("resetting\n"),
        asm::i8042_reset(),
        asm::triple_fault(),
    ]
    .concat();
    let kernel = write_file(&dir, "tiny.elf", &tiny_elf(&code));

    for vcpus in ["1", "2"] {
        let (status, stdout, stderr) = run_cabin(
            &[
                "run", "--kernel", &kernel, "--memory", "32", "--vcpus", vcpus,
            ],
            TIMEOUT,
        );
        assert_eq!(stdout, "resetting\n");
        assert_eq!(status.code(), Some(0), "stderr: {stderr}");
        assert_eq!(stderr, "");
    }
}

/// 8 KiB of printable text, no line structure a tty could interpret.
fn paste_text() -> Vec<u8> {
    (0..8192u32).map(|i| b'!' + (i * 37 % 94) as u8).collect()
}

/// A tiny guest that echoes `len` bytes of COM1 input, slowly, then prints a marker
/// and resets.
fn echo_guest(dir: &std::path::Path, len: usize) -> String {
    let len = u32::try_from(len).unwrap();
    let code = [
        asm::echo_serial_input(len, 50),
        asm::print_then_reset("\necho done\n"),
    ]
    .concat();
    write_file(dir, "echo.elf", &tiny_elf(&code))
}

#[test]
fn tiny_guest_reading_slowly_gets_8k_piped_at_once_intact() {
    let dir = scratch_dir("smoke-paste");
    let kernel = echo_guest(&dir, 8192);
    let input = paste_text();
    let mut cabin = Cabin::spawn_interactive(&["run", "--kernel", &kernel, "--memory", "32"]);

    // All at once, then end of file while most of it still waits in cabin.
    cabin.type_text(std::str::from_utf8(&input).unwrap());
    cabin.close_stdin();
    let status = cabin.wait_exit(TIMEOUT);

    let stdout = cabin.stdout.text();
    let expected = format!("{}\necho done\n", std::str::from_utf8(&input).unwrap());
    assert!(
        stdout == expected,
        "echoed {} of {} bytes (first difference at {:?}); stderr: {}",
        stdout.len().saturating_sub(11),
        input.len(),
        stdout
            .bytes()
            .zip(expected.bytes())
            .position(|(a, b)| a != b),
        cabin.stderr.text()
    );
    assert_eq!(status.code(), Some(0), "stderr: {}", cabin.stderr.text());
    assert_eq!(cabin.stderr.text(), "");
}

#[test]
fn tiny_guest_gets_a_regular_file_as_stdin_intact() {
    let dir = scratch_dir("smoke-file-stdin");
    let kernel = echo_guest(&dir, 8192);
    let input = paste_text();
    let path = write_file(&dir, "input.txt", &input);
    let file = std::fs::File::open(path).unwrap();

    let mut cabin = Cabin::spawn_with_stdin(
        &["run", "--kernel", &kernel, "--memory", "32"],
        Stdio::from(file),
    );
    let status = cabin.wait_exit(TIMEOUT);

    let expected = format!("{}\necho done\n", std::str::from_utf8(&input).unwrap());
    assert!(
        cabin.stdout.text() == expected,
        "stdout differs; stderr: {}",
        cabin.stderr.text()
    );
    assert_eq!(status.code(), Some(0), "stderr: {}", cabin.stderr.text());
}

/// A config file for a tiny guest, with extra top-level sections.
fn tiny_config(dir: &std::path::Path, code: &[u8], extra: serde_json::Value) -> String {
    let kernel = write_file(dir, "tiny.elf", &tiny_elf(code));
    let mut config = serde_json::json!({
        "boot-source": {"kernel_image_path": kernel},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 32},
    });
    for (key, value) in extra.as_object().unwrap() {
        if key == "machine-config" {
            for (field, v) in value.as_object().unwrap() {
                config[key][field] = v.clone();
            }
        } else {
            config[key] = value.clone();
        }
    }
    write_file(dir, "vm.json", config.to_string().as_bytes())
}

#[test]
fn serial_out_path_gets_the_guest_console_instead_of_stdout() {
    let dir = scratch_dir("smoke-serial-out");
    let code = asm::print_then_reset("to the file\n");
    let out = dir.join("serial.out");
    let config = tiny_config(
        &dir,
        &code,
        serde_json::json!({"serial": {"serial_out_path": out}}),
    );

    let (status, stdout, stderr) = run_cabin(&["run", "--config-file", &config], TIMEOUT);

    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stdout, "");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "to the file\n");
}

#[test]
fn smt_and_dirty_page_tracking_boot_a_two_vcpu_guest() {
    let dir = scratch_dir("smoke-smt");
    let code = asm::print_then_reset("smt ok\n");
    let config = tiny_config(
        &dir,
        &code,
        serde_json::json!({"machine-config": {"vcpu_count": 2, "smt": true,
                                              "track_dirty_pages": true}}),
    );

    let (status, stdout, stderr) = run_cabin(&["run", "--config-file", &config], TIMEOUT);

    assert_eq!(stdout, "smt ok\n", "stderr: {stderr}");
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
}

/// Free 2 MiB huge pages on this host.
fn free_huge_pages() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn huge_pages_boot_or_say_how_to_reserve_them() {
    let dir = scratch_dir("smoke-huge");
    let code = asm::print_then_reset("huge ok\n");
    let config = tiny_config(
        &dir,
        &code,
        serde_json::json!({"machine-config": {"huge_pages": "2M"}}),
    );

    let (status, stdout, stderr) = run_cabin(&["run", "--config-file", &config], TIMEOUT);

    // 32 MiB of guest RAM is 16 huge pages; the host decides which case this is.
    if free_huge_pages() >= 16 {
        assert_eq!(stdout, "huge ok\n", "stderr: {stderr}");
        assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    } else {
        assert_eq!(status.code(), Some(1), "stderr: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("cabin: Cannot map 32 MiB of guest memory on 2 MiB huge pages: reserve them first (echo N > /proc/sys/vm/nr_hugepages"),
            "{stderr}"
        );
    }
}

#[test]
fn shutdown_presses_the_power_button_then_stops_a_guest_that_ignores_it() {
    // A tiny guest has no ACPI code: it never notices the button, so cabin stops it
    // when the timeout ends, with seccomp on (the VMM thread arms its timer).
    let dir = scratch_dir("smoke-shutdown");
    let code = asm::tick_forever(b'.', 1_000_000);
    let (mut cabin, sock) = common::start_tiny_guest(&dir, &code);
    let ctl = |args: &[&str]| common::ctl(&sock, args);
    cabin.expect_stdout(".", TIMEOUT);

    let shutdown = ctl(&["shutdown", "--timeout", "1"]);

    // cabin ctl returns once cabin has exited.
    assert!(
        shutdown.status.success(),
        "{}",
        String::from_utf8_lossy(&shutdown.stderr)
    );
    let status = cabin.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(4), "{}", cabin.stderr.text());
    assert_eq!(
        cabin.stderr.text(),
        "cabin: the guest did not power off within 1 s of the power button; stopped it\n"
    );
}

#[test]
fn snapshot_then_restore_goes_on_counting_where_it_stopped() {
    // A guest counting in its memory is snapshotted (pause, state, memory) and
    // killed; a new cabin restored from the snapshot prints the next value.
    let dir = scratch_dir("smoke-snapshot");
    let code = asm::count_in_memory_forever(200_000);
    let (mut cabin, sock) = common::start_tiny_guest(&dir, &code);
    let ctl = |args: &[&str]| common::ctl(&sock, args);
    assert!(cabin
        .stdout
        .wait_until(|text| letters(text).len() >= 30, TIMEOUT));
    let snap = dir.join("snap");
    let out = ctl(&["snapshot", snap.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        snap.to_str().unwrap()
    );
    let printed = letters(&cabin.stdout.text());
    assert_counts_on(&printed, 1);
    let last = *printed.last().unwrap();
    // The snapshot leaves the VM paused.
    let status = ctl(&["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("Paused"));
    cabin.signal(libc::SIGKILL);
    cabin.wait_exit(TIMEOUT);

    // `cabin run --restore DIR`: runs at once, from the value after the last.
    let mut restored = Cabin::spawn(&["run", "--restore", snap.to_str().unwrap()]);
    assert!(
        restored
            .stdout
            .wait_until(|text| letters(text).len() >= 30, TIMEOUT),
        "{}",
        restored.stderr.text()
    );
    assert_counts_on(&letters(&restored.stdout.text()), (last + 1) % 26);
    restored.signal(libc::SIGTERM);
    restored.wait_exit(TIMEOUT);
    assert_eq!(restored.stderr.text(), "cabin: stopped by signal 15\n");

    // PUT /snapshot/load on a fresh `cabin run --api-sock`, as Firecracker clients do.
    let sock = dir.join("load.sock");
    let mut loaded = Cabin::spawn(&["run", "--api-sock", sock.to_str().unwrap()]);
    common::wait_for_socket(&sock, &loaded);
    let body = serde_json::json!({
        "snapshot_path": snap.join("state"),
        "mem_backend": {"backend_type": "File", "backend_path": snap.join("memory")},
        "resume_vm": true,
    });
    let answer = common::http(&sock, "PUT", "/snapshot/load", Some(&body.to_string()));
    assert_eq!(answer.0, 204, "{answer:?}");
    assert!(loaded
        .stdout
        .wait_until(|text| letters(text).len() >= 30, TIMEOUT));
    assert_counts_on(&letters(&loaded.stdout.text()), (last + 1) % 26);
    loaded.signal(libc::SIGTERM);
    loaded.wait_exit(TIMEOUT);
}

#[test]
fn snapshot_of_a_guest_paused_right_after_a_port_write_does_not_write_it_twice() {
    common::snapshot_port_writer_three_times(TIMEOUT);
}
