//! Every user mistake gets one line naming the problem and a non-zero exit status,
//! never a panic. These need /dev/kvm to exist (any KVM, no guest is booted).

#[path = "common/mod.rs"]
mod common;

use std::process::Command;
use std::time::Duration;

use common::{asm, cabin_bin, run_cabin, scratch_dir, tiny_elf, write_file};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs cabin, expects exit status `code` and exactly one stderr line containing
/// every fragment.
fn expect_error(args: &[&str], code: i32, fragments: &[&str]) {
    let (status, stdout, stderr) = run_cabin(args, TIMEOUT);
    assert_eq!(status.code(), Some(code), "args {args:?}\nstderr: {stderr}");
    assert_eq!(stdout, "", "args {args:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "{stderr}");
    if code == 1 {
        assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
        assert!(stderr.starts_with("cabin: "), "{stderr}");
    }
    for fragment in fragments {
        assert!(
            stderr.contains(fragment),
            "{fragment:?} missing from: {stderr}"
        );
    }
}

fn good_kernel(name: &str) -> String {
    let dir = scratch_dir(name);
    let code = [asm::i8042_reset(), asm::halt_forever()].concat();
    write_file(&dir, "tiny.elf", &tiny_elf(&code))
}

#[test]
fn missing_kernel_is_named() {
    expect_error(
        &["run", "--kernel", "/nonexistent/vmlinux"],
        1,
        &["Kernel /nonexistent/vmlinux does not exist"],
    );
}

#[test]
fn directory_as_kernel_is_refused() {
    expect_error(
        &["run", "--kernel", "/tmp"],
        1,
        &["Kernel /tmp is not a regular file"],
    );
}

#[test]
fn garbage_kernel_lists_accepted_formats() {
    let dir = scratch_dir("garbage");
    let kernel = write_file(&dir, "garbage", &[0x42; 10000]);
    expect_error(
        &["run", "--kernel", &kernel],
        1,
        &["is not a kernel image", "ELF vmlinux", "bzImage"],
    );
}

#[test]
fn empty_kernel_lists_accepted_formats() {
    let dir = scratch_dir("empty");
    let kernel = write_file(&dir, "empty", b"");
    expect_error(&["run", "--kernel", &kernel], 1, &["is not a kernel image"]);
}

#[test]
fn missing_initrd_is_named() {
    let kernel = good_kernel("noinitrd");
    expect_error(
        &[
            "run",
            "--kernel",
            &kernel,
            "--initrd",
            "/nonexistent/initrd.gz",
        ],
        1,
        &["Initrd /nonexistent/initrd.gz does not exist"],
    );
}

#[test]
fn initrd_larger_than_guest_memory_is_refused() {
    let kernel = good_kernel("biginitrd");
    let dir = scratch_dir("biginitrd-file");
    let initrd = dir.join("big.img");
    let file = std::fs::File::create(&initrd).unwrap();
    file.set_len(200 << 20).unwrap(); // sparse: no disk used
    expect_error(
        &[
            "run",
            "--kernel",
            &kernel,
            "--initrd",
            initrd.to_str().unwrap(),
            "--memory",
            "64",
        ],
        1,
        &["does not fit in guest memory", "--memory"],
    );
}

#[test]
fn zero_memory_is_refused() {
    let kernel = good_kernel("mem0");
    expect_error(
        &["run", "--kernel", &kernel, "--memory", "0"],
        1,
        &["Guest memory of 0 MiB is too small"],
    );
}

#[test]
fn memory_beyond_host_is_refused() {
    let kernel = good_kernel("memhuge");
    expect_error(
        &["run", "--kernel", &kernel, "--memory", "100000000"],
        1,
        &["more than this host has"],
    );
}

#[test]
fn zero_vcpus_are_refused() {
    let kernel = good_kernel("vcpu0");
    expect_error(
        &["run", "--kernel", &kernel, "--vcpus", "0"],
        1,
        &["at least one vCPU"],
    );
}

#[test]
fn too_many_vcpus_are_refused() {
    let kernel = good_kernel("vcpumany");
    expect_error(
        &["run", "--kernel", &kernel, "--vcpus", "5000"],
        1,
        &["5000 vCPUs are more than"],
    );
}

#[test]
fn overlong_cmdline_is_refused() {
    let kernel = good_kernel("cmdline");
    let cmdline = "x".repeat(4096);
    expect_error(
        &["run", "--kernel", &kernel, "--cmdline", &cmdline],
        1,
        &["Kernel command line is 4096 bytes", "shorten --cmdline"],
    );
}

#[test]
fn non_numeric_memory_is_a_usage_error() {
    expect_error(
        &["run", "--kernel", "/k", "--memory", "lots"],
        2,
        &["invalid value 'lots'"],
    );
}

#[test]
fn unknown_option_is_a_usage_error() {
    expect_error(
        &["run", "--kernel", "/k", "--frobnicate"],
        2,
        &["--frobnicate"],
    );
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn kvm_device_missing_says_how_to_fix() {
    // A private mount namespace with an empty /dev: /dev/kvm is missing for cabin only.
    assert!(is_root(), "this test needs root (unshare -m)");
    let kernel = good_kernel("nokvm");
    let script = format!(
        "mount -t tmpfs none /dev && exec {} run --kernel {kernel}",
        cabin_bin().display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]);
    let mut cabin = common::Cabin::spawn_with(&mut cmd, false);
    let status = cabin.wait_exit(TIMEOUT);
    let stderr = cabin.stderr.text();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/dev/kvm does not exist"), "{stderr}");
    assert!(stderr.contains("modprobe"), "{stderr}");
}

#[test]
fn kvm_device_not_permitted_says_how_to_fix() {
    // cabin as user nobody: /dev/kvm is root-only on this machine (crw-------);
    // on hosts where it is group kvm, nobody is not in that group either.
    assert!(is_root(), "this test needs root (setpriv)");
    let kernel = good_kernel("kvmperm");
    std::fs::set_permissions(
        std::path::Path::new(&kernel).parent().unwrap(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(cabin_bin())
        .args(["run", "--kernel", &kernel]);
    let mut cabin = common::Cabin::spawn_with(&mut cmd, false);
    let status = cabin.wait_exit(TIMEOUT);
    let stderr = cabin.stderr.text();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("Permission denied opening /dev/kvm"),
        "{stderr}"
    );
    assert!(stderr.contains("usermod -aG kvm"), "{stderr}");
}

#[test]
fn missing_disk_is_named() {
    let kernel = good_kernel("disk-missing");
    expect_error(
        &[
            "run",
            "--kernel",
            &kernel,
            "--disk",
            "path=/nonexistent/root.ext4",
        ],
        1,
        &["Disk /nonexistent/root.ext4 does not exist"],
    );
}

#[test]
fn directory_as_disk_is_refused() {
    let kernel = good_kernel("disk-dir");
    expect_error(
        &["run", "--kernel", &kernel, "--disk", "path=/tmp"],
        1,
        &["Disk /tmp is not a regular file or a block device"],
    );
}

#[test]
fn same_image_twice_is_refused() {
    let kernel = good_kernel("disk-twice");
    let dir = scratch_dir("disk-twice-img");
    let image = write_file(&dir, "a.img", &[0u8; 4096]);
    let disk = format!("path={image}");
    let again = format!("path={image},readonly=on");
    expect_error(
        &[
            "run", "--kernel", &kernel, "--disk", &disk, "--disk", &again,
        ],
        1,
        &["is the same file as disk", "give each image once"],
    );
}

#[test]
fn malformed_disk_option_is_a_usage_error() {
    expect_error(
        &["run", "--kernel", "/k", "--disk", "path=/a.img,size=10G"],
        2,
        &["unknown key 'size'"],
    );
    expect_error(
        &["run", "--kernel", "/k", "--disk", "readonly=on"],
        2,
        &["path=FILE is missing"],
    );
}

#[test]
fn overlong_disk_id_is_refused() {
    let kernel = good_kernel("disk-id");
    let dir = scratch_dir("disk-id-img");
    let image = write_file(&dir, "a.img", &[0u8; 4096]);
    let disk = format!("path={image},id=this-id-is-far-too-long-for-virtio");
    expect_error(
        &["run", "--kernel", &kernel, "--disk", &disk],
        1,
        &["longer than 20 bytes"],
    );
}

#[test]
fn unwritable_disk_without_readonly_says_how_to_fix() {
    // A read-only bind mount in a private mount namespace: even root cannot write.
    assert!(is_root(), "this test needs root (unshare -m)");
    let kernel = good_kernel("disk-rofs");
    let dir = scratch_dir("disk-rofs-img");
    let image = write_file(&dir, "a.img", &[0u8; 4096]);
    let script = format!(
        "mount --bind {d} {d} && mount -o remount,bind,ro {d} && exec {} run --kernel {kernel} --disk path={image}",
        cabin_bin().display(),
        d = dir.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]);
    let mut cabin = common::Cabin::spawn_with(&mut cmd, false);
    let status = cabin.wait_exit(TIMEOUT);
    let stderr = cabin.stderr.text();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("is not writable: add readonly=on"),
        "{stderr}"
    );
}

#[test]
fn vsock_mistakes_are_named() {
    let kernel = good_kernel("vsockargs");
    let dir = scratch_dir("vsockargs-dir");
    let uds = dir.join("v.sock");
    let uds = uds.to_str().unwrap();
    let with = |spec: &str| {
        vec![
            "run".to_owned(),
            "--kernel".to_owned(),
            kernel.clone(),
            "--vsock".to_owned(),
            spec.to_owned(),
        ]
    };
    let cases: [(String, &[&str]); 4] = [
        (
            format!("cid=2,path={uds}"),
            &["guest_cid 2 is reserved", "give 3 or more"],
        ),
        (
            format!("cid=three,path={uds}"),
            &["cid=three is not a number"],
        ),
        (
            "cid=3,path=/nonexistent/v.sock".to_owned(),
            &["directory /nonexistent does not exist"],
        ),
        ("cid=3".to_owned(), &["path=UDS is missing"]),
    ];
    for (spec, fragments) in cases {
        let args = with(&spec);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        expect_error(&args, 2, fragments);
    }
    let args = with(&format!("path={uds}"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    expect_error(&args, 2, &["--vsock needs cid=N"]);
    let spec = format!("cid=3,path={uds}");
    expect_error(
        &["run", "--restore", dir.to_str().unwrap(), "--vsock", &spec],
        2,
        &["--vsock with --restore takes only path=UDS"],
    );
    // A regular file where the socket should go is not replaced.
    std::fs::write(uds, b"not a socket").unwrap();
    let spec = format!("cid=3,path={uds}");
    expect_error(
        &["run", "--kernel", &kernel, "--vsock", &spec],
        1,
        &[uds, "not a socket"],
    );
    assert_eq!(std::fs::read(uds).unwrap(), b"not a socket");
}

#[test]
fn vsock_socket_in_use_is_refused_and_a_stale_one_replaced() {
    let dir = scratch_dir("vsockbusy");
    let kernel = write_file(&dir, "idle.elf", &tiny_elf(&asm::idle_forever()));
    let uds = dir.join("v.sock");
    let spec = format!("cid=3,path={}", uds.display());
    let args = ["run", "--kernel", &kernel, "--vsock", &spec];
    let mut first = common::Cabin::spawn(&args);
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !uds.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            first.stderr.text()
        );
        std::thread::sleep(Duration::from_millis(10)); // polling for the socket file, bounded
    }
    // A second VM on the same socket: refused, the first one's socket untouched.
    expect_error(&args, 1, &[uds.to_str().unwrap(), "in use"]);
    // The guest has no vsock driver: a host connection is closed, not left hanging.
    let mut conn = std::os::unix::net::UnixStream::connect(&uds).unwrap();
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    std::io::Write::write_all(&mut conn, b"CONNECT 10789\n").unwrap();
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut conn, &mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    // Killed, the first leaves its socket file behind; the next cabin replaces it.
    first.signal(libc::SIGKILL);
    first.wait_exit(TIMEOUT);
    assert!(uds.exists());
    let mut second = common::Cabin::spawn(&args);
    let connected = (0..1000).any(|_| {
        let ok = std::os::unix::net::UnixStream::connect(&uds).is_ok();
        if !ok {
            std::thread::sleep(Duration::from_millis(10)); // polling for the new listener, bounded
        }
        ok
    });
    assert!(connected, "{}", second.stderr.text());
    // A clean exit removes the socket.
    second.signal(libc::SIGTERM);
    second.wait_exit(TIMEOUT);
    assert!(!uds.exists(), "{}", second.stderr.text());
}

#[test]
fn exec_on_a_vm_not_started_or_without_vsock_says_what_to_do() {
    let dir = scratch_dir("execstate");
    let kernel = write_file(&dir, "idle.elf", &tiny_elf(&asm::idle_forever()));
    let api = dir.join("api.sock");
    let spec = format!("cid=3,path={}", dir.join("v.sock").display());
    let api_arg = api.to_str().unwrap();
    let vm = common::Cabin::spawn(&[
        "run",
        "--kernel",
        &kernel,
        "--vsock",
        &spec,
        "--api-sock",
        api_arg,
    ]);
    common::wait_for_socket(&api, &vm);
    let exec = ["exec", "--api-sock", api_arg, "--", "true"];
    let (status, _, stderr) = run_cabin(&exec, TIMEOUT);
    assert_eq!(status.code(), Some(255), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!("cabin exec: the VM of cabin at {api_arg} is Not started; start it first: cabin ctl --api-sock {api_arg} start")
    );
    drop(vm);
    // The same VM without --vsock.
    let _ = std::fs::remove_file(&api);
    let vm = common::Cabin::spawn(&["run", "--kernel", &kernel, "--api-sock", api_arg]);
    common::wait_for_socket(&api, &vm);
    let (status, _, stderr) = run_cabin(&exec, TIMEOUT);
    assert_eq!(status.code(), Some(255), "{stderr}");
    assert!(
        stderr.contains("has no vsock device; start cabin with --vsock"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
