//! Bad snapshots and bad snapshot requests: `cabin run --restore` exits with one
//! line naming the problem, `PUT /snapshot/load` and `/snapshot/create` answer 400
//! and cabin goes on serving. The snapshots are of a tiny hand-assembled guest
//! counting in its memory (no Linux), made on this host's /dev/kvm.

#[path = "common/mod.rs"]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::{asm, assert_counts_on, letters, run_cabin, scratch_dir, tiny_elf, write_file, Cabin};
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use serde_json::json;
use vmm::snapshot::Snapshot;

const TIMEOUT: Duration = Duration::from_secs(60);
/// The guest's RAM in MiB, and the memory file's size.
const MEMORY_MIB: u64 = 32;
const MEMORY_BYTES: u64 = MEMORY_MIB << 20;

fn counting_kernel(dir: &Path) -> String {
    write_file(
        dir,
        "tiny.elf",
        &tiny_elf(&asm::count_in_memory_forever(200_000)),
    )
}

fn ctl(sock: &Path, args: &[&str]) -> String {
    let out = common::ctl(sock, args);
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Boots the counting guest (with `extra` options), lets it print a few values,
/// snapshots it into `dir/snap` and kills it.
fn make_snapshot(dir: &Path, extra: &[&str]) -> PathBuf {
    let kernel = counting_kernel(dir);
    let sock = dir.join("api.sock");
    let memory = MEMORY_MIB.to_string();
    let mut args = vec!["run", "--kernel", &kernel, "--memory", &memory];
    args.extend(extra);
    args.extend(["--api-sock", sock.to_str().unwrap()]);
    let mut cabin = Cabin::spawn(&args);
    common::wait_for_socket(&sock, &cabin);
    ctl(&sock, &["start"]);
    assert!(cabin
        .stdout
        .wait_until(|text| letters(text).len() >= 5, TIMEOUT));
    let snap = dir.join("snap");
    ctl(&sock, &["snapshot", snap.to_str().unwrap()]);
    cabin.signal(libc::SIGKILL);
    cabin.wait_exit(TIMEOUT);
    snap
}

/// One good snapshot of the counting guest, shared by the tests.
fn base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| make_snapshot(&scratch_dir("snaperr-base"), &[]))
}

/// What a bad snapshot directory's state or memory file is.
enum File {
    /// The good one (hard-linked).
    Good,
    /// The good one, changed.
    Patched(Vec<u8>),
    /// These bytes.
    Bytes(Vec<u8>),
    /// A sparse file of this size.
    Size(u64),
    /// A directory.
    Dir,
    /// None.
    Missing,
}

/// The good state file with `patch` applied.
fn patched(patch: impl Fn(&mut Vec<u8>)) -> File {
    let mut bytes = fs::read(base().join("state")).unwrap();
    patch(&mut bytes);
    File::Patched(bytes)
}

/// The good snapshot with the first vCPU feature bit this host's KVM does not
/// offer set in every vCPU's CPUID (leaf 7.0 EBX, else EDX), checksum valid.
/// Returns the state file's bytes and the leaf it names.
fn cpuid_beyond_host(dir: &Path) -> (Vec<u8>, &'static str) {
    let kvm = kvm_ioctls::Kvm::new().unwrap();
    let supported = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    let leaf7 = supported
        .as_slice()
        .iter()
        .find(|e| e.function == 7 && e.index == 0)
        .copied()
        .unwrap_or_default();
    let mut snapshot = Snapshot::read(&base().join("state")).unwrap();
    let (ebx, edx) = (!leaf7.ebx, !leaf7.edx);
    assert!(
        ebx != 0 || edx != 0,
        "this host offers every leaf 7 feature"
    );
    for vcpu in &mut snapshot.vcpus {
        let entry = vcpu
            .cpuid
            .iter_mut()
            .find(|e| e.function == 7 && e.index == 0)
            .expect("the guest saw leaf 7");
        if ebx != 0 {
            entry.ebx |= 1 << ebx.trailing_zeros();
        } else {
            entry.edx |= 1 << edx.trailing_zeros();
        }
    }
    let path = dir.join("cpuid.state");
    snapshot.write(&path).unwrap();
    let leaf = if ebx != 0 {
        "CPUID leaf 0x7.0 EBX"
    } else {
        "CPUID leaf 0x7.0 EDX"
    };
    (fs::read(path).unwrap(), leaf)
}

/// A bad snapshot directory: its name, state and memory files, what refusing it says.
type Row = (&'static str, File, File, Vec<&'static str>);

/// A bad state file with the good memory file.
fn state(name: &'static str, state: File, fragments: &[&'static str]) -> Row {
    (name, state, File::Good, fragments.to_vec())
}

/// A bad memory file with the good state file.
fn memory(name: &'static str, memory: File, fragments: &[&'static str]) -> Row {
    (name, File::Good, memory, fragments.to_vec())
}

/// A snapshot directory (`state`, `memory`) and what refusing it must say.
struct BadCase {
    name: String,
    dir: PathBuf,
    fragments: Vec<String>,
}

/// Every bad snapshot directory, derived from the good one (made once).
fn bad_cases() -> &'static [BadCase] {
    static CASES: OnceLock<Vec<BadCase>> = OnceLock::new();
    CASES.get_or_init(|| {
        let good = base();
        let root = scratch_dir("snaperr-cases");
        let len = fs::metadata(good.join("state")).unwrap().len() as usize;
        let (cpuid_state, leaf) = cpuid_beyond_host(&root);
        let elf = fs::read(good.parent().unwrap().join("tiny.elf"));
        let (not_cabin, cut) = ("is not a cabin snapshot", "is cut short");
        let unreadable = ["Cannot read the snapshot file", "No such file"];
        let version = |v: u32| patched(move |b| b[8..12].copy_from_slice(&v.to_le_bytes()));
        let size = [
            "The memory file",
            "has 33554432 bytes of RAM",
            "another snapshot",
        ];
        let table = [
            state("empty-state", File::Bytes(Vec::new()), &[not_cabin]),
            state("state-5-bytes", patched(|b| b.truncate(5)), &[not_cabin]),
            state(
                "state-20-bytes",
                patched(|b| b.truncate(20)),
                &[cut, "holds 20 bytes, less than the 24-byte header"],
            ),
            state(
                "state-half",
                patched(|b| b.truncate(len / 2)),
                &[cut, "announces"],
            ),
            state(
                "state-flipped-byte",
                patched(|b| b[len - 40] ^= 0x10),
                &["is corrupted", "checksum"],
            ),
            state(
                "state-wrong-magic",
                patched(|b| b[..8].copy_from_slice(b"CABINSNQ")),
                &[not_cabin],
            ),
            state(
                "state-version-3",
                version(3),
                &[
                    "is a version 3 snapshot",
                    "reads versions up to 2",
                    "with the cabin that made it",
                ],
            ),
            state(
                "state-version-1",
                version(1),
                &[
                    "is a version 1 snapshot from an older cabin",
                    "reads version 2",
                    "take the snapshot again",
                ],
            ),
            state(
                "state-version-0",
                version(0),
                &["is corrupted", "format version 0, which no cabin writes"],
            ),
            state("state-elf", File::Bytes(elf.unwrap()), &[not_cabin]),
            state(
                "state-directory",
                File::Dir,
                &["Cannot read the snapshot file", "Is a directory"],
            ),
            state("state-missing", File::Missing, &unreadable),
            ("nothing", File::Missing, File::Missing, unreadable.to_vec()),
            memory(
                "memory-short",
                File::Size(MEMORY_BYTES - 4096),
                &[&size[..], &["is 33550336 bytes"]].concat(),
            ),
            memory(
                "memory-long",
                File::Size(MEMORY_BYTES + 4096),
                &[&size[..], &["is 33558528 bytes"]].concat(),
            ),
            memory(
                "memory-missing",
                File::Missing,
                &["Cannot open the memory file", "No such file"],
            ),
            state(
                "cpuid-beyond-host",
                File::Bytes(cpuid_state),
                &[
                    "This host's CPU",
                    leaf,
                    "restore on a host with the same CPU features",
                ],
            ),
        ];
        table
            .into_iter()
            .map(|(name, state, memory, fragments)| {
                let dir = root.join(name);
                fs::create_dir(&dir).unwrap();
                for (file, what) in [(state, "state"), (memory, "memory")] {
                    let path = dir.join(what);
                    match file {
                        File::Good => fs::hard_link(good.join(what), &path).unwrap(),
                        File::Patched(bytes) | File::Bytes(bytes) => {
                            fs::write(&path, bytes).unwrap()
                        }
                        File::Size(size) => fs::File::create(&path).unwrap().set_len(size).unwrap(),
                        File::Dir => fs::create_dir(&path).unwrap(),
                        File::Missing => {}
                    }
                }
                let mut fragments: Vec<String> = fragments.into_iter().map(str::to_owned).collect();
                if !name.starts_with("cpuid") {
                    fragments.push(name.to_owned()); // the message names the file
                }
                BadCase {
                    name: name.to_owned(),
                    dir,
                    fragments,
                }
            })
            .collect()
    })
}

/// Runs cabin to its end; expects exit status `code`, nothing on stdout and one
/// stderr line `cabin: ...` holding every fragment. Returns that line.
fn expect_error(args: &[&str], code: i32, fragments: &[String]) -> String {
    let (status, stdout, stderr) = run_cabin(args, TIMEOUT);
    assert_eq!(status.code(), Some(code), "{args:?}\nstderr: {stderr}");
    assert_eq!(stdout, "", "{args:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.starts_with("cabin: "), "{stderr}");
    for fragment in fragments {
        assert!(
            stderr.contains(fragment.as_str()),
            "{fragment:?} missing from: {stderr}"
        );
    }
    stderr
}

fn strings(fragments: &[&str]) -> Vec<String> {
    fragments.iter().map(|f| (*f).to_owned()).collect()
}

#[test]
fn restore_refuses_each_bad_snapshot_with_one_line() {
    for case in bad_cases() {
        let line = expect_error(
            &["run", "--restore", case.dir.to_str().unwrap()],
            1,
            &case.fragments,
        );
        eprintln!("{}: {}", case.name, line.trim_end());
    }
}

/// A cabin serving its API socket, started with `args`.
struct Api {
    cabin: Cabin,
    sock: PathBuf,
}

impl Api {
    fn start(dir: &Path, args: &[&str]) -> Api {
        let sock = dir.join("api.sock");
        let mut all = vec!["run"];
        all.extend(args);
        all.extend(["--api-sock", sock.to_str().unwrap()]);
        let cabin = Cabin::spawn(&all);
        common::wait_for_socket(&sock, &cabin);
        Api { cabin, sock }
    }

    fn send(&self, method: &str, path: &str, body: serde_json::Value) -> (u16, String) {
        common::http(&self.sock, method, path, Some(&body.to_string()))
    }

    /// Sends a request cabin must refuse with a 400 naming every fragment; cabin
    /// then still answers GET /. Returns the fault message.
    fn refused(&self, path: &str, body: serde_json::Value, fragments: &[String]) -> String {
        let (status, answer) = self.send("PUT", path, body.clone());
        assert_eq!(status, 400, "{body}: {answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        let message = answer["fault_message"].as_str().unwrap().to_owned();
        for fragment in fragments {
            assert!(
                message.contains(fragment.as_str()),
                "{fragment:?} missing from: {message}"
            );
        }
        let (status, info) = common::http(&self.sock, "GET", "/", None);
        assert_eq!(status, 200, "{info}");
        message
    }
}

fn load_body(dir: &Path) -> serde_json::Value {
    json!({
        "snapshot_path": dir.join("state"),
        "mem_backend": {"backend_type": "File", "backend_path": dir.join("memory")},
    })
}

#[test]
fn api_load_refuses_bad_snapshots_and_requests_then_loads_a_good_one() {
    let dir = scratch_dir("snaperr-api");
    let api = Api::start(&dir, &[]);
    for case in bad_cases() {
        let message = api.refused("/snapshot/load", load_body(&case.dir), &case.fragments);
        eprintln!("{}: {message}", case.name);
    }
    let good = base();
    let (state, memory) = (good.join("state"), good.join("memory"));
    let requests = [
        (
            json!({"snapshot_path": state, "mem_backend": {"backend_type": "Uffd", "backend_path": memory}}),
            vec!["Uffd is not supported", "use File"],
        ),
        (
            json!({"snapshot_path": state, "mem_file_path": memory, "mem_backend": {"backend_type": "File", "backend_path": memory}}),
            vec!["either mem_backend or mem_file_path, not both"],
        ),
        (
            json!({"snapshot_path": state}),
            vec!["No memory file", "mem_backend"],
        ),
        (
            json!({"snapshot_path": state, "mem_file_path": memory, "bogus": 1}),
            vec!["bogus"],
        ),
        (
            json!({"snapshot_path": state, "mem_file_path": memory, "network_overrides": [{"iface_id": "eth0", "host_dev_name": "tap0"}]}),
            vec!["no interface 'eth0'", "(it has: none)"],
        ),
    ];
    for (body, fragments) in requests {
        let message = api.refused("/snapshot/load", body, &strings(&fragments));
        eprintln!("{message}");
    }

    // After all that, a good load works and the guest counts on.
    let mut body = load_body(good);
    body["resume_vm"] = json!(true);
    let (status, answer) = api.send("PUT", "/snapshot/load", body.clone());
    assert_eq!(status, 204, "{answer}");
    assert!(api
        .cabin
        .stdout
        .wait_until(|text| letters(text).len() >= 10, TIMEOUT));
    let printed = letters(&api.cabin.stdout.text());
    assert_counts_on(&printed, printed[0]);

    // Once loaded, no second load; snapshots need a paused VM and an existing
    // directory, and a Diff one needs dirty-page tracking.
    let message = api.refused(
        "/snapshot/load",
        body,
        &strings(&[
            "Loading a snapshot (it needs a fresh cabin",
            "not allowed while the VM is Running",
        ]),
    );
    eprintln!("second load: {message}");
    let create = |dir: &Path, kind: &str| json!({"snapshot_path": dir.join("state"), "mem_file_path": dir.join("memory"), "snapshot_type": kind});
    let message = api.refused(
        "/snapshot/create",
        create(&dir, "Full"),
        &strings(&["pause the VM first", "not allowed while the VM is Running"]),
    );
    eprintln!("create while running: {message}");
    let (status, answer) = api.send("PATCH", "/vm", json!({"state": "Paused"}));
    assert_eq!(status, 204, "{answer}");
    let message = api.refused(
        "/snapshot/create",
        create(&dir, "Diff"),
        &strings(&[
            "A Diff snapshot needs dirty-page tracking",
            "track_dirty_pages",
        ]),
    );
    eprintln!("diff without tracking: {message}");
    let nowhere = dir.join("no-such-dir");
    let fragments = [format!(
        "directory {} does not exist; create it first",
        nowhere.display()
    )];
    let message = api.refused("/snapshot/create", create(&nowhere, "Full"), &fragments);
    eprintln!("create into a missing directory: {message}");
    let (status, answer) = api.send("PUT", "/snapshot/create", create(&dir, "Full"));
    assert_eq!(status, 204, "{answer}");
}

#[test]
fn api_load_is_refused_by_a_cabin_configured_to_boot() {
    let dir = scratch_dir("snaperr-kernel");
    let kernel = counting_kernel(&dir);
    let api = Api::start(&dir, &["--kernel", &kernel]);
    let fragments = [
        format!("configured to boot {kernel}"),
        "only --api-sock".to_owned(),
    ];
    let message = api.refused("/snapshot/load", load_body(base()), &fragments);
    eprintln!("{message}");
}

#[test]
fn restore_refuses_a_snapshot_whose_disk_is_gone_or_resized() {
    let dir = scratch_dir("snaperr-disk");
    let disk = dir.join("disk.raw");
    fs::File::create(&disk).unwrap().set_len(1 << 20).unwrap();
    let spec = format!("path={}", disk.display());
    let snap = make_snapshot(&dir, &["--disk", &spec]);
    let restore = ["run", "--restore", snap.to_str().unwrap()];
    let moved = dir.join("moved.raw");
    fs::rename(&disk, &moved).unwrap();
    let fragments = [
        "Cannot use the snapshot's disks (restore needs each at the path it had".to_owned(),
        format!("Disk {} does not exist", disk.display()),
    ];
    let line = expect_error(&restore, 1, &fragments);
    eprintln!("disk gone: {line}");
    fs::rename(&moved, &disk).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    let line = expect_error(
        &restore,
        1,
        &strings(&["has 4096 sectors, the snapshot's had 2048: restore needs the same disk"]),
    );
    eprintln!("disk resized: {line}");
}

#[test]
fn restore_conflicts_with_boot_options() {
    let (status, _, stderr) = run_cabin(
        &["run", "--restore", "/nonexistent", "--kernel", "x"],
        TIMEOUT,
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let (status, _, stderr) = run_cabin(
        &[
            "run",
            "--restore",
            "/nonexistent",
            "--net",
            "tap=t0,mac=02:00:00:00:00:09",
        ],
        TIMEOUT,
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr,
        "cabin: --net with --restore takes only tap=NAME: the guest keeps the MAC it had in the snapshot\n"
    );
}

#[test]
fn rebase_refuses_files_of_different_sizes() {
    let dir = scratch_dir("snaperr-rebase");
    let full = dir.join("full");
    let diff = dir.join("diff");
    fs::File::create(&full)
        .unwrap()
        .set_len(MEMORY_BYTES)
        .unwrap();
    fs::File::create(&diff)
        .unwrap()
        .set_len(MEMORY_BYTES / 2)
        .unwrap();
    let args = [
        "snapshot",
        "rebase",
        "--memory-path",
        full.to_str().unwrap(),
        "--diff-path",
        diff.to_str().unwrap(),
    ];
    let line = expect_error(
        &args,
        1,
        &[
            format!("The diff memory file {} is 16777216 bytes", diff.display()),
            format!("the full memory file {} is 33554432 bytes", full.display()),
            "not of the same guest".into(),
        ],
    );
    eprintln!("{line}");
    assert_eq!(fs::metadata(&full).unwrap().len(), MEMORY_BYTES);
}

#[test]
fn diff_snapshot_rebased_on_full_equals_full_and_restores() {
    let dir = scratch_dir("snaperr-diff");
    let kernel = counting_kernel(&dir);
    let api = Api::start(&dir, &[]);
    for (path, body) in [
        (
            "/machine-config",
            json!({"vcpu_count": 1, "mem_size_mib": MEMORY_MIB, "track_dirty_pages": true}),
        ),
        ("/boot-source", json!({"kernel_image_path": kernel})),
        ("/actions", json!({"action_type": "InstanceStart"})),
    ] {
        let (status, answer) = api.send("PUT", path, body);
        assert_eq!(status, 204, "{path}: {answer}");
    }
    let out = &api.cabin.stdout;
    assert!(out.wait_until(|text| letters(text).len() >= 5, TIMEOUT));
    let snap = |name: &str, extra: &[&str]| {
        let path = dir.join(name);
        let mut args = vec!["snapshot", path.to_str().unwrap()];
        args.extend(extra);
        ctl(&api.sock, &args);
        path
    };
    let a = snap("A", &[]);
    let seen = letters(&out.text()).len();
    ctl(&api.sock, &["resume"]);
    assert!(out.wait_until(|text| letters(text).len() >= seen + 10, TIMEOUT));
    let b = snap("B", &["--diff"]);
    let c = snap("C", &[]);
    let printed = letters(&out.text());
    assert_counts_on(&printed, printed[0]);
    let last = *printed.last().unwrap();
    api.cabin.signal(libc::SIGKILL);

    let d = dir.join("D");
    fs::create_dir(&d).unwrap();
    fs::copy(a.join("memory"), d.join("memory")).unwrap();
    let (status, stdout, stderr) = run_cabin(
        &[
            "snapshot",
            "rebase",
            "--memory-path",
            d.join("memory").to_str().unwrap(),
            "--diff-path",
            b.join("memory").to_str().unwrap(),
        ],
        TIMEOUT,
    );
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("changed pages applied"), "{stdout}");
    assert!(
        fs::read(d.join("memory")).unwrap() == fs::read(c.join("memory")).unwrap(),
        "rebased A+B differs from C"
    );

    fs::copy(b.join("state"), d.join("state")).unwrap();
    let mut restored = Cabin::spawn(&["run", "--restore", d.to_str().unwrap()]);
    assert!(
        restored
            .stdout
            .wait_until(|text| letters(text).len() >= 10, TIMEOUT),
        "{}",
        restored.stderr.text()
    );
    assert_counts_on(&letters(&restored.stdout.text()), (last + 1) % 26);
    restored.signal(libc::SIGTERM);
    restored.wait_exit(TIMEOUT);
}
