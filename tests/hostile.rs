//! Hostile-guest suite (issue 13): tiny guests that attack cabin's devices and exit
//! paths while they are live, run by `cabin run` with seccomp on.
//!
//! Each guest is the interpreter of `common/guest.rs` running a list of operations
//! built here. It prints `FAIL ...` on COM1 whenever a device does not answer as
//! required, and the tests assert on exactly what it printed, on cabin's exit
//! status (0: the guest could still reset the machine) and on its stderr (no panic,
//! one rate-limited line per failed device).
//!
//! Two block devices are attached: `vda`, the one attacked, and `vdb`, a healthy
//! one the guest reads from after the attacks to show the rest of the VM still works.
//! This file attacks the virtio devices; `hostile/exits.rs` the other exit paths
//! (ports, MSRs, CPUID, stray MMIO, a second vCPU) and measures cabin's memory.

#[path = "common/mod.rs"]
mod common;
#[path = "hostile/exits.rs"]
mod exits;
#[path = "common/guest.rs"]
mod guest;
#[path = "common/virtio_driver.rs"]
mod virtio_driver;

use std::path::Path;
use std::time::Duration;

use common::{scratch_dir, tiny_elf, write_file, Cabin};
use guest::Program;
use virtio_driver::*;

const TIMEOUT: Duration = Duration::from_secs(150);
/// Sectors of each test disk.
const DISK_SECTORS: u64 = 128;
/// Guest RAM in MiB; the guest's rings and buffers sit at 4-6 MiB.
const MEMORY_MIB: u64 = 64;
/// The first address past guest RAM.
const RAM_END: u64 = MEMORY_MIB << 20;
/// The line cabin logs (once) when a block device's queue is broken.
const NEEDS_RESET_LOG: &str = "the device needs a reset";

/// The attacked disk (first window) and the healthy one (second window).
fn disks() -> (Blk, Blk) {
    (Blk::new("vda", 0, 0x40_0000), Blk::new("vdb", 1, 0x50_0000))
}

/// cabin's arguments for `program` with two test disks in `dir`.
fn args(dir: &Path, program: &Program) -> Vec<String> {
    let kernel = write_file(dir, "guest.elf", &tiny_elf(&program.image()));
    let mut args = vec![
        "run".to_owned(),
        "--kernel".to_owned(),
        kernel,
        "--memory".to_owned(),
        MEMORY_MIB.to_string(),
    ];
    for name in ["vda.img", "vdb.img"] {
        let disk = write_file(dir, name, &disk_image(DISK_SECTORS));
        args.push("--disk".to_owned());
        args.push(format!("path={disk}"));
    }
    args
}

/// Runs `program` to its end (it resets the machine) and returns (stdout, stderr),
/// asserting cabin exited 0.
fn run(name: &str, program: &Program) -> (String, String) {
    run_with(name, program, &[])
}

/// [`run`] with more of cabin's arguments.
fn run_with(name: &str, program: &Program, extra: &[&str]) -> (String, String) {
    let dir = scratch_dir(name);
    let mut args = args(&dir, program);
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    run_args(name, &args)
}

/// Runs cabin with `args` until its guest resets the machine and returns (stdout,
/// stderr), asserting cabin exited 0 without a panic.
fn run_args(name: &str, args: &[String]) -> (String, String) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cabin = Cabin::spawn(&args);
    let status = cabin.wait_exit(TIMEOUT);
    let (stdout, stderr) = (cabin.stdout.text(), cabin.stderr.text());
    assert_eq!(
        status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Shown with --nocapture: what cabin logged about the attacks.
    eprintln!(
        "--- {name}: cabin's stderr ({} lines) ---\n{stderr}",
        stderr.lines().count()
    );
    (stdout, stderr)
}

/// Breaks queue `q` of the device at `base` twice (its avail index jumps by 2^15;
/// a chain head past the table), each time followed by `storm` notifications of
/// every queue, and checks that the device then shows NEEDS_RESET. Prints
/// "case {label}avail index jump" and "case {label}head past the queue".
fn break_queue_twice(p: &mut Program, base: u64, queues: &mut [Vq], q: usize, label: &str) {
    let storm = |p: &mut Program, queues: &[Vq]| {
        for vq in queues.iter().rev() {
            p.write_n(base + reg::QUEUE_NOTIFY, 4, u64::from(vq.index), 2000, 0);
        }
    };
    let expect_failed = |p: &mut Program, what: &str| {
        p.expect(
            base + reg::STATUS,
            4,
            0xff,
            RUNNING | NEEDS_RESET,
            REG_TRIES,
            &format!("FAIL {label}{what}: no NEEDS_RESET\n"),
        );
    };
    p.print(&format!("case {label}avail index jump\n"));
    init_device(p, base, queues);
    p.write(queues[q].avail() + 2, 2, 0x8000);
    storm(p, queues);
    expect_failed(p, "avail index jump");
    p.print(&format!("case {label}head past the queue\n"));
    init_device(p, base, queues);
    let past = queues[q].size;
    queues[q].submit(p, base, past);
    storm(p, queues);
    expect_failed(p, "head past the queue");
}

/// Asserts that cabin's stderr is exactly `n` lines, each a device marking itself
/// failed: one line per failure, none per notification.
fn assert_only_failure_lines(stderr: &str, n: usize) {
    assert_eq!(stderr.lines().count(), n, "{stderr}");
    let failed = stderr.lines().filter(|l| l.contains(NEEDS_RESET_LOG));
    assert_eq!(failed.count(), n, "{stderr}");
}

/// What a guest that prints `lines`, then runs [`finish`], shows on COM1.
fn lines_then_alive(lines: impl Iterator<Item = String>) -> String {
    lines
        .map(|line| line + "\n")
        .chain(std::iter::once("still alive\n".to_owned()))
        .collect()
}

/// How many of `n` occurrences of one log call site cabin prints (its rate limit:
/// the first 10, then powers of two).
fn logged_of(n: usize) -> usize {
    (1..=n).filter(|&i| i <= 10 || i.is_power_of_two()).count()
}

/// The epilogue every guest runs: the healthy disk still answers, the serial port
/// still prints.
fn finish(p: &mut Program, healthy: &mut Blk) {
    healthy.good_read(p, 7, "healthy disk after the attacks");
    p.print("still alive\n");
}

#[test]
fn broken_virtio_blk_queues_mark_the_device_failed_and_a_reset_recovers_it() {
    let (mut vda, mut vdb) = disks();
    let mut p = Program::new();
    vdb.init(&mut p);
    vdb.good_read(&mut p, 1, "healthy disk before the attacks");
    let table = vda.scratch();
    // Each case breaks the queue of a running vda; each must end in NEEDS_RESET.
    type Case = (&'static str, fn(&mut Program, &mut Blk, u64));
    let cases: [Case; 10] = [
        ("avail index jumps by 2^15", |p, d, _| {
            d.publish_index(p, 0x8000)
        }),
        ("head index past the queue", |p, d, _| d.submit(p, 0xffff)),
        ("descriptor loop", |p, d, _| {
            d.header_for(p, T_IN, 0);
            d.desc(p, 0, d.header(), 16, NEXT, 0);
            d.submit(p, 0);
        }),
        ("writable descriptor loop", |p, d, _| {
            d.desc(p, 0, d.status_byte(), 1, NEXT | WRITE, 0);
            d.submit(p, 0);
        }),
        ("next index past the table", |p, d, _| {
            d.header_for(p, T_IN, 0);
            d.desc(p, 0, d.header(), 16, NEXT, 300);
            d.submit(p, 0);
        }),
        ("indirect table pointing at itself", |p, d, t| {
            desc_at(p, t, t, 16, INDIRECT, 0);
            d.desc(p, 0, t, 16, INDIRECT, 0);
            d.submit(p, 0);
        }),
        ("empty indirect table", |p, d, t| {
            d.desc(p, 0, t, 0, INDIRECT, 0);
            d.submit(p, 0);
        }),
        ("read-only status byte", |p, d, _| {
            d.header_for(p, T_IN, 0);
            d.desc(p, 0, d.header(), 16, NEXT, 1);
            d.desc(p, 1, d.status_byte(), 1, 0, 0);
            d.submit(p, 0);
        }),
        ("status byte outside guest RAM", |p, d, _| {
            d.header_for(p, T_IN, 0);
            d.desc(p, 0, d.header(), 16, NEXT, 1);
            d.desc(p, 1, RAM_END, 1, WRITE, 0);
            d.submit(p, 0);
        }),
        ("chain of more than 4 GiB", |p, d, _| {
            d.header_for(p, T_IN, 0);
            d.desc(p, 0, d.header(), 16, NEXT, 1);
            d.desc(p, 1, d.data(), u32::MAX, NEXT | WRITE, 2);
            d.desc(p, 2, d.status_byte(), 1, WRITE, 0);
            d.submit(p, 0);
        }),
    ];
    for (name, attack) in &cases {
        p.print(&format!("case {name}\n"));
        vda.init(&mut p);
        attack(&mut p, &mut vda, table);
        vda.expect_status(&mut p, NEEDS_RESET | 0xff, RUNNING | NEEDS_RESET, name);
        // A notification storm on the failed device: ignored, and not logged.
        p.write_n(vda.base + reg::QUEUE_NOTIFY, 4, 0, 20_000, 0);
        // Reset and set up again: the device works.
        vda.init(&mut p);
        vda.good_read(&mut p, 3, &format!("after {name}"));
    }
    finish(&mut p, &mut vdb);

    let (stdout, stderr) = run("hostile-broken-queues", &p);

    let expected = lines_then_alive(cases.iter().map(|(name, _)| format!("case {name}")));
    assert_eq!(stdout, expected, "stderr:\n{stderr}");
    let failures = stderr
        .lines()
        .filter(|l| l.contains(NEEDS_RESET_LOG))
        .count();
    assert_eq!(failures, logged_of(cases.len()), "{stderr}");
    assert_eq!(stderr.lines().count(), failures, "{stderr}");
}

#[test]
fn malformed_virtio_blk_requests_fail_alone_with_an_error_status() {
    let (mut vda, mut vdb) = disks();
    let mut p = Program::new();
    vdb.init(&mut p);
    vda.init(&mut p);
    let table = vda.scratch();
    // Each request is wrong but carries a status byte: it fails with that status
    // and the device goes on serving.
    type Case = (&'static str, u64, fn(&mut Program, &mut Blk, u64));
    let cases: [Case; 9] = [
        ("sector past the end", S_IOERR, |p, d, _| {
            d.read_request(p, DISK_SECTORS)
        }),
        ("sector 2^64 - 1", S_IOERR, |p, d, _| {
            d.read_request(p, u64::MAX)
        }),
        ("zero-length data", S_IOERR, |p, d, _| {
            request(p, d, T_IN, 0, &[(d.data(), 0, WRITE)])
        }),
        ("read into a read-only buffer", S_IOERR, |p, d, _| {
            request(p, d, T_IN, 0, &[(d.data(), 512, 0)])
        }),
        ("write from a device-writable buffer", S_IOERR, |p, d, _| {
            request(p, d, T_OUT, 0, &[(d.data(), 512, WRITE)])
        }),
        ("data of almost 4 GiB", S_IOERR, |p, d, _| {
            request(p, d, T_IN, 0, &[(d.data(), 0xffff_fe00, WRITE)])
        }),
        ("data outside guest RAM", S_IOERR, |p, d, _| {
            request(p, d, T_IN, 0, &[(RAM_END, 512, WRITE)])
        }),
        ("unknown request type", S_UNSUPP, |p, d, _| {
            request(p, d, 0x7777, 0, &[])
        }),
        ("300 segments in an indirect table", S_IOERR, |p, d, t| {
            // header, 298 one-sector segments, status: longer than the queue.
            let count = 300u16;
            for i in 0..count {
                let (addr, len, flags) = match i {
                    0 => (d.header(), 16, NEXT),
                    i if i == count - 1 => (d.status_byte(), 1, WRITE),
                    _ => (d.data(), 512, NEXT | WRITE),
                };
                desc_at(p, t + 16 * u64::from(i), addr, len, flags, i + 1);
            }
            d.header_for(p, T_IN, 0);
            p.write(d.status_byte(), 1, 0xff);
            d.desc(p, 0, t, 16 * u32::from(count), INDIRECT, 0);
            d.submit(p, 0);
        }),
    ];
    for (name, status, attack) in &cases {
        p.print(&format!("case {name}\n"));
        attack(&mut p, &mut vda, table);
        vda.expect_used(&mut p, name);
        vda.expect_status_byte(&mut p, *status, name);
        vda.expect_status(&mut p, 0xff, RUNNING, name);
        vda.good_read(&mut p, 5, &format!("after {name}"));
    }
    finish(&mut p, &mut vdb);

    let (stdout, stderr) = run("hostile-bad-requests", &p);

    let expected: String = cases
        .iter()
        .map(|(name, _, _)| format!("case {name}\n"))
        .chain(std::iter::once("still alive\n".to_owned()))
        .collect();
    assert_eq!(stdout, expected, "stderr:\n{stderr}");
    assert!(!stderr.contains(NEEDS_RESET_LOG), "{stderr}");
    // One rate-limited warning per rejected request, nothing else.
    assert_eq!(
        stderr.lines().count(),
        stderr.lines().filter(|l| l.contains("virtio-blk")).count(),
        "{stderr}"
    );
    assert!(stderr.lines().count() <= cases.len(), "{stderr}");
}

/// Lays out and submits a request of `request_type` at `sector` with `data`
/// descriptors (addr, len, flags) between the header and a writable status byte.
fn request(p: &mut Program, d: &mut Blk, request_type: u32, sector: u64, data: &[(u64, u32, u16)]) {
    d.header_for(p, request_type, sector);
    p.write(d.status_byte(), 1, 0xff);
    d.desc(p, 0, d.header(), 16, NEXT, 1);
    let mut i = 1u16;
    for &(addr, len, flags) in data {
        d.desc(p, i, addr, len, flags | NEXT, i + 1);
        i += 1;
    }
    d.desc(p, i, d.status_byte(), 1, WRITE, 0);
    d.submit(p, 0);
}

#[test]
fn virtio_queue_setup_attacks_are_refused_with_needs_reset() {
    let (mut vda, mut vdb) = disks();
    let mut p = Program::new();
    vdb.init(&mut p);
    let (desc, avail, used) = (vda.desc_table(), vda.avail(), vda.used());
    // (name, size, desc, avail, used): each must leave QueueReady at 0, and
    // DRIVER_OK then fails the device.
    let cases: [(&str, u64, u64, u64, u64); 12] = [
        ("queue size 0", 0, desc, avail, used),
        ("odd queue size", 3, desc, avail, used),
        ("queue size not a power of two", 100, desc, avail, used),
        ("queue size over the maximum", 512, desc, avail, used),
        ("queue size over 16 bits", 0x1_0100, desc, avail, used),
        (
            "descriptor table past guest RAM",
            256,
            RAM_END - 0x800,
            avail,
            used,
        ),
        ("avail ring at 4 GiB", 256, desc, 1 << 32, used),
        (
            "used ring at the top of the address space",
            256,
            desc,
            avail,
            u64::MAX - 0xfff,
        ),
        ("misaligned descriptor table", 256, desc + 8, avail, used),
        ("misaligned avail ring", 256, desc, avail + 1, used),
        ("misaligned used ring", 256, desc, avail, used + 2),
        (
            "rings in the MMIO gap",
            256,
            0xd000_0000,
            0xd000_0000,
            0xd000_0000,
        ),
    ];
    for (name, size, d, a, u) in cases {
        p.print(&format!("case {name}\n"));
        vda.negotiate(&mut p);
        vda.queue_config(&mut p, size, d, a, u);
        vda.reg(&mut p, reg::QUEUE_READY, 1);
        p.expect(
            vda.base + reg::QUEUE_READY,
            4,
            u64::MAX,
            0,
            1,
            &format!("FAIL {name}: queue ready\n"),
        );
        vda.reg(&mut p, reg::STATUS, RUNNING);
        vda.expect_status(&mut p, 0xff, RUNNING | NEEDS_RESET, name);
    }

    p.print("case overlapping rings\n");
    vda.negotiate(&mut p);
    vda.queue_config(&mut p, 256, desc, desc, desc);
    vda.reg(&mut p, reg::QUEUE_READY, 1);
    vda.reg(&mut p, reg::STATUS, RUNNING);
    vda.notify(&mut p);
    p.write(desc + 2, 2, 7);
    vda.notify(&mut p);

    p.print("case status regressions\n");
    vda.init(&mut p);
    for status in [
        ACKNOWLEDGE,
        ACKNOWLEDGE | DRIVER,
        0x7,
        0xff,
        NEEDS_RESET,
        0xffff_ffff,
    ] {
        vda.reg(&mut p, reg::STATUS, status);
        vda.expect_status(
            &mut p,
            0xff,
            RUNNING,
            &format!("after writing status {status:#x}"),
        );
    }
    // Queue registers of a running device: ignored.
    vda.queue_config(&mut p, 8, 0, 0, 0);
    vda.reg(&mut p, reg::QUEUE_READY, 0);
    vda.good_read(&mut p, 2, "after writing queue registers while running");

    p.print("case reset with a request in flight\n");
    vda.read_request(&mut p, 4);
    vda.reg(&mut p, reg::STATUS, 0);
    vda.expect_status(&mut p, 0xff, 0, "after reset");
    vda.init(&mut p);
    vda.good_read(&mut p, 6, "after a reset with a request in flight");

    p.print("case FAILED set by the driver\n");
    vda.reg(&mut p, reg::STATUS, RUNNING | FAILED);
    vda.expect_status(&mut p, 0xff, RUNNING | FAILED, "after FAILED");
    vda.init(&mut p);
    vda.good_read(&mut p, 8, "after FAILED and a reset");
    finish(&mut p, &mut vdb);

    let (stdout, stderr) = run("hostile-queue-setup", &p);

    let expected: String = cases
        .iter()
        .map(|c| c.0)
        .chain([
            "overlapping rings",
            "status regressions",
            "reset with a request in flight",
            "FAILED set by the driver",
        ])
        .map(|name| format!("case {name}\n"))
        .chain(std::iter::once("still alive\n".to_owned()))
        .collect();
    assert_eq!(stdout, expected, "stderr:\n{stderr}");
    assert!(stderr.lines().all(|l| l.contains("virtio")), "{stderr}");
}

#[test]
fn every_width_across_the_virtio_window_leaves_the_devices_usable() {
    let (mut vda, mut vdb) = disks();
    let mut p = Program::new();
    vdb.init(&mut p);
    vda.init(&mut p);
    vda.read_request(&mut p, 9);
    p.print("reads\n");
    // Reads of every width at every offset, through the config space and on into
    // the healthy device's window.
    for width in [1u32, 2, 4, 8] {
        p.read_n(vda.base, width, 0x1100, 1);
    }
    p.print("writes\n");
    // Writes of every width at every offset of the attacked window: all ones, then
    // zeros (which resets the device through Status), then small numbers.
    for value in [u64::MAX, 0, 1, 0x8000] {
        for width in [1u32, 2, 4, 8] {
            let count = 0x1000 - width;
            p.write_n(vda.base, width, value, count, 1);
        }
    }
    p.print("past the last device\n");
    let past = vdb.base + 0x1000;
    for width in [1u32, 2, 4, 8] {
        p.read_n(past, width, 0x1000, 1);
        p.write_n(past, width, u64::MAX, 0x1000 - width, 1);
    }
    vda.init(&mut p);
    vda.good_read(&mut p, 10, "attacked disk after the register sweeps");
    finish(&mut p, &mut vdb);

    let (stdout, stderr) = run("hostile-register-window", &p);

    assert_eq!(
        stdout, "reads\nwrites\npast the last device\nstill alive\n",
        "stderr:\n{stderr}"
    );
    // Tens of thousands of refused writes: a handful of rate-limited lines.
    let lines = stderr.lines().count();
    assert!(lines < 100, "{lines} lines:\n{stderr}");
}

#[test]
fn broken_virtio_console_queues_mark_it_failed_without_a_log_flood() {
    let (_, mut vdb) = disks();
    // The console is placed after the two disks.
    let base = VIRTIO_MMIO_START + 2 * 0x1000;
    let mut queues = [Vq::new(0, 0x60_0000), Vq::new(1, 0x60_4000)];
    let mut p = Program::new();
    vdb.init(&mut p);
    break_queue_twice(&mut p, base, &mut queues, 1, "transmit ");
    p.print("case transmit after a reset\n");
    init_device(&mut p, base, &mut queues);
    let text = b"virtio console ok\n";
    let tx = &mut queues[1];
    p.write_bytes(tx.data(), text);
    tx.desc(&mut p, 0, tx.data(), text.len() as u32, 0, 0);
    tx.submit(&mut p, base, 0);
    tx.expect_used(&mut p, "transmit after a reset");
    finish(&mut p, &mut vdb);

    let (stdout, stderr) = run_with("hostile-console", &p, &["--console", "virtio"]);

    assert_eq!(
        stdout,
        "case transmit avail index jump\ncase transmit head past the queue\n\
         case transmit after a reset\nvirtio console ok\nstill alive\n",
        "stderr:\n{stderr}"
    );
    assert_only_failure_lines(&stderr, 2);
}

#[test]
fn broken_virtio_rng_queue_marks_it_failed_and_a_reset_recovers_it() {
    // One disk (the healthy one, first window) and the entropy device after it.
    let mut vdb = Blk::new("vdb", 0, 0x50_0000);
    let base = VIRTIO_MMIO_START + 0x1000;
    let mut queues = [Vq::new(0, 0x60_0000)];
    let mut p = Program::new();
    vdb.init(&mut p);
    break_queue_twice(&mut p, base, &mut queues, 0, "");
    p.print("case entropy after a reset\n");
    init_device(&mut p, base, &mut queues);
    let q = &mut queues[0];
    q.desc(&mut p, 0, q.data(), 64, WRITE, 0);
    q.submit(&mut p, base, 0);
    q.expect_used(&mut p, "entropy after a reset");
    p.expect(
        q.used() + 8,
        4,
        u64::MAX,
        64,
        1,
        "FAIL rng: not 64 bytes of entropy\n",
    );
    finish(&mut p, &mut vdb);

    let dir = scratch_dir("hostile-rng");
    let kernel = write_file(&dir, "guest.elf", &tiny_elf(&p.image()));
    let disk = write_file(&dir, "vdb.img", &disk_image(DISK_SECTORS));
    let config = serde_json::json!({
        "boot-source": {"kernel_image_path": kernel},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": MEMORY_MIB},
        "drives": [{"drive_id": "vdb", "path_on_host": disk,
                    "is_root_device": false, "is_read_only": false}],
        "entropy": {},
    });
    let config = write_file(&dir, "vm.json", config.to_string().as_bytes());
    let args = ["run", "--config-file", &config].map(str::to_owned);
    let (stdout, stderr) = run_args("hostile-rng", &args);

    assert_eq!(
        stdout,
        "case avail index jump\ncase head past the queue\ncase entropy after a reset\nstill alive\n",
        "stderr:\n{stderr}"
    );
    assert_only_failure_lines(&stderr, 2);
}
