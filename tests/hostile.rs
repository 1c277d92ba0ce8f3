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

#[path = "common/mod.rs"]
mod common;
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
    let dir = scratch_dir(name);
    let args = args(&dir, program);
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
    (stdout, stderr)
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

    let expected: String = cases
        .iter()
        .map(|(name, _)| format!("case {name}\n"))
        .chain(std::iter::once("still alive\n".to_owned()))
        .collect();
    assert_eq!(stdout, expected, "stderr:\n{stderr}");
    let failures = stderr
        .lines()
        .filter(|l| l.contains(NEEDS_RESET_LOG))
        .count();
    assert_eq!(failures, logged_of(cases.len()), "{stderr}");
    assert_eq!(stderr.lines().count(), failures, "{stderr}");
}
