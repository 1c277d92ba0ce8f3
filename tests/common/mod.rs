//! Shared helpers for cabin's end-to-end tests: spawn the `cabin` binary, collect
//! what it prints, wait for markers with timeouts, and kill it on drop.

#![allow(dead_code)]

pub mod netns;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The cabin binary cargo built for these tests.
pub fn cabin_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cabin"))
}

/// Waits for the API socket a just-started `cabin` creates; panics with what it
/// printed when it does not appear within 30 s.
pub fn wait_for_socket(sock: &Path, cabin: &Cabin) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "no API socket at {}\n{}",
            sock.display(),
            cabin.stderr.text()
        );
        thread::sleep(Duration::from_millis(10)); // polling for the socket file, bounded by the deadline
    }
}

/// Runs `cabin ctl --api-sock SOCK ARGS...` to completion.
pub fn ctl(sock: &Path, args: &[&str]) -> std::process::Output {
    Command::new(cabin_bin())
        .args(["ctl", "--api-sock"])
        .arg(sock)
        .args(args)
        .output()
        .expect("cannot run cabin ctl")
}

/// Starts the project kernel with the interactive busybox initramfs (a shell on
/// the serial console, `quiet`), stdin piped, `extra` options appended; the guest
/// prints `cabin: guest init ready` once its shell starts.
pub fn spawn_interactive_initramfs(extra: &[&str]) -> Cabin {
    let kernel = artifact("CABIN_VMLINUX");
    let initrd = artifact("CABIN_INITRAMFS");
    let mut args = vec![
        "run",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--cmdline",
        "console=ttyS0 reboot=k panic=-1 quiet",
    ];
    args.extend(extra);
    Cabin::spawn_interactive(&args)
}

/// A fresh scratch directory for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cabin-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[derive(Default)]
struct Output {
    text: String,
    closed: bool,
}

/// Text a child writes to one of its pipes, collected by a reader thread.
#[derive(Clone, Default)]
pub struct Collected(Arc<(Mutex<Output>, Condvar)>);

impl Collected {
    fn spawn_reader(mut pipe: impl Read + Send + 'static) -> Self {
        let collected = Collected::default();
        let shared = collected.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = pipe.read(&mut buf).unwrap_or(0);
                let (lock, cvar) = &*shared.0;
                let mut out = lock.lock().unwrap();
                if n == 0 {
                    out.closed = true;
                    cvar.notify_all();
                    return;
                }
                out.text.push_str(&String::from_utf8_lossy(&buf[..n]));
                cvar.notify_all();
            }
        });
        collected
    }

    /// Everything so far.
    pub fn text(&self) -> String {
        self.0 .0.lock().unwrap().text.clone()
    }

    /// Waits until the text contains `marker`; false on timeout or when the pipe closes first.
    pub fn wait_for(&self, marker: &str, timeout: Duration) -> bool {
        self.wait_until(|text| text.contains(marker), timeout)
    }

    /// Waits until a whole line (ended by a newline) starts with `prefix` and returns
    /// it without the prefix; None on timeout or when the pipe closes first.
    pub fn wait_for_line(&self, prefix: &str, timeout: Duration) -> Option<String> {
        let find = |text: &str| {
            text.split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .find_map(|l| {
                    l.trim_end()
                        .trim_start_matches('\r')
                        .strip_prefix(prefix)
                        .map(str::to_owned)
                })
        };
        if self.wait_until(|text| find(text).is_some(), timeout) {
            find(&self.text())
        } else {
            None
        }
    }

    /// Waits until `pred` holds for the text; false on timeout or when the pipe closes first.
    pub fn wait_until(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.0;
        let mut out = lock.lock().unwrap();
        loop {
            if pred(&out.text) {
                return true;
            }
            let now = Instant::now();
            if out.closed || now >= deadline {
                return false;
            }
            out = cvar.wait_timeout(out, deadline - now).unwrap().0;
        }
    }

    /// Waits until the pipe is closed (the child exited), bounded by `timeout`.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.0;
        let mut out = lock.lock().unwrap();
        while !out.closed {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            out = cvar.wait_timeout(out, deadline - now).unwrap().0;
        }
        true
    }
}

/// A running cabin process; killed when dropped.
pub struct Cabin {
    child: Option<Child>,
    exit_rx: Receiver<ExitStatus>,
    /// Standard input, when the test asked for a pipe.
    pub stdin: Option<ChildStdin>,
    /// What cabin (and so the guest's console) printed.
    pub stdout: Collected,
    /// cabin's own messages.
    pub stderr: Collected,
    pid: u32,
}

impl Cabin {
    /// Starts `cabin ARGS...` with stdin closed.
    pub fn spawn(args: &[&str]) -> Cabin {
        Self::spawn_with(Command::new(cabin_bin()).args(args), false)
    }

    /// Starts `cabin ARGS...` with a pipe for stdin.
    pub fn spawn_interactive(args: &[&str]) -> Cabin {
        Self::spawn_with(Command::new(cabin_bin()).args(args), true)
    }

    /// Starts `cabin ARGS...` with `stdin` as its standard input (a file, say).
    pub fn spawn_with_stdin(args: &[&str], stdin: Stdio) -> Cabin {
        Self::spawn_stdin(Command::new(cabin_bin()).args(args), stdin)
    }

    /// Starts a prepared command (to run cabin under another user, say).
    pub fn spawn_with(cmd: &mut Command, interactive: bool) -> Cabin {
        let stdin = if interactive {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        Self::spawn_stdin(cmd, stdin)
    }

    fn spawn_stdin(cmd: &mut Command, stdin: Stdio) -> Cabin {
        let mut child = cmd
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start cabin");
        let stdout = Collected::spawn_reader(child.stdout.take().unwrap());
        let stderr = Collected::spawn_reader(child.stderr.take().unwrap());
        let stdin = child.stdin.take();
        let pid = child.id();
        // One thread owns the child's wait() so the test can wait with a timeout.
        let (tx, exit_rx) = channel();
        let (child_tx, child_rx) = channel::<Child>();
        thread::spawn(move || {
            if let Ok(mut child) = child_rx.recv() {
                if let Ok(status) = child.wait() {
                    let _ = tx.send(status);
                }
            }
        });
        child_tx.send(child).unwrap();
        Cabin {
            child: None,
            exit_rx,
            stdin,
            stdout,
            stderr,
            pid,
        }
    }

    /// Waits for cabin to exit; panics with everything it printed on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.exit_rx.recv_timeout(timeout) {
            Ok(status) => {
                // Let the reader threads drain the pipes.
                self.stdout.wait_closed(Duration::from_secs(10));
                self.stderr.wait_closed(Duration::from_secs(10));
                status
            }
            Err(_) => panic!(
                "cabin did not exit within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.stdout.text(),
                self.stderr.text()
            ),
        }
    }

    /// Waits for `marker` on stdout; panics with the output so far on timeout.
    pub fn expect_stdout(&self, marker: &str, timeout: Duration) {
        assert!(
            self.stdout.wait_for(marker, timeout),
            "no {marker:?} on cabin's stdout within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout.text(),
            self.stderr.text()
        );
    }

    /// cabin's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends a signal to cabin.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill() with a pid we spawned and have not reaped (the waiter thread
        // reaps it only after it exits).
        unsafe { libc::kill(self.pid as i32, sig) };
    }

    /// Closes cabin's stdin: end of file for cabin.
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Writes to cabin's stdin.
    pub fn type_text(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("spawned without a stdin pipe");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Cabin {
    fn drop(&mut self) {
        if self.exit_rx.try_recv().is_err() {
            self.signal(libc::SIGKILL);
        }
        drop(self.child.take());
    }
}

/// Runs cabin to completion with stdin closed; returns (status, stdout, stderr).
pub fn run_cabin(args: &[&str], timeout: Duration) -> (ExitStatus, String, String) {
    let mut cabin = Cabin::spawn(args);
    let status = cabin.wait_exit(timeout);
    (status, cabin.stdout.text(), cabin.stderr.text())
}

/// Physical address where the tiny guests are loaded and entered (16 MiB, like Linux).
pub const TINY_GUEST_ADDR: u64 = 0x100_0000;

/// Wraps 64-bit machine code in a minimal ELF64 x86_64 executable with one PT_LOAD
/// segment at [`TINY_GUEST_ADDR`], entered there by cabin's 64-bit boot path.
pub fn tiny_elf(code: &[u8]) -> Vec<u8> {
    const EHDR_SIZE: u16 = 64;
    const PHDR_SIZE: u16 = 56;
    const CODE_OFFSET: u64 = 0x1000;
    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF");
    elf.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little endian, version 1, SysV
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&TINY_GUEST_ADDR.to_le_bytes()); // e_entry
    elf.extend_from_slice(&u64::from(EHDR_SIZE).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&EHDR_SIZE.to_le_bytes());
    elf.extend_from_slice(&PHDR_SIZE.to_le_bytes());
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shentsize
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    assert_eq!(elf.len(), usize::from(EHDR_SIZE));
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
    elf.extend_from_slice(&CODE_OFFSET.to_le_bytes());
    elf.extend_from_slice(&TINY_GUEST_ADDR.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&TINY_GUEST_ADDR.to_le_bytes()); // p_paddr
    elf.extend_from_slice(&(code.len() as u64).to_le_bytes());
    elf.extend_from_slice(&(code.len() as u64).to_le_bytes());
    elf.extend_from_slice(&0x1000u64.to_le_bytes());
    elf.resize(CODE_OFFSET as usize, 0);
    elf.extend_from_slice(code);
    elf
}

/// Hand-assembled x86-64 snippets for tiny guests.
pub mod asm {
    /// `mov dx, 0x3f8` then `mov al, b; out dx, al` for each byte: prints on COM1.
    pub fn serial_print(text: &str) -> Vec<u8> {
        let mut code = vec![0x66, 0xba, 0xf8, 0x03];
        for b in text.bytes() {
            code.extend_from_slice(&[0xb0, b, 0xee]);
        }
        code
    }

    /// Prints `text` on COM1, then resets the machine (and halts, should the reset
    /// not take).
    pub fn print_then_reset(text: &str) -> Vec<u8> {
        [serial_print(text), i8042_reset(), halt_forever()].concat()
    }

    /// `mov al, 0xfe; out 0x64, al`: pulse the CPU reset line through the i8042.
    pub fn i8042_reset() -> Vec<u8> {
        vec![0xb0, 0xfe, 0xe6, 0x64]
    }

    /// `hlt; jmp hlt`: halt forever (with interrupts off, as cabin enters guests).
    pub fn halt_forever() -> Vec<u8> {
        vec![0xf4, 0xeb, 0xfd]
    }

    /// `sti; hlt; jmp hlt`: wait for interrupts forever (none are set up to come).
    pub fn idle_forever() -> Vec<u8> {
        vec![0xfb, 0xf4, 0xeb, 0xfd]
    }

    /// Prints `tick` on COM1 forever, spinning `delay` iterations between ticks.
    pub fn tick_forever(tick: u8, delay: u32) -> Vec<u8> {
        // mov dx, 0x3f8
        let mut code = vec![0x66, 0xba, 0xf8, 0x03];
        // loop: mov al, tick; out dx, al; mov ecx, delay
        code.extend_from_slice(&[0xb0, tick, 0xee, 0xb9]);
        code.extend_from_slice(&delay.to_le_bytes());
        // spin: dec ecx; jnz spin; jmp loop
        code.extend_from_slice(&[0xff, 0xc9, 0x75, 0xfc, 0xeb, 0xf2]);
        code
    }

    /// Counts in guest memory forever: the byte at 0x30_0000 goes 0, 1, ... 25, 0...
    /// and each value is printed on COM1 as a letter (`a` to `z`), spinning `delay`
    /// iterations after each. A restored guest goes on from the letter after the
    /// last one it printed: its registers and memory came back.
    pub fn count_in_memory_forever(delay: u32) -> Vec<u8> {
        // mov dx, 0x3f8
        let mut code = vec![0x66, 0xba, 0xf8, 0x03];
        // loop: movzx eax, byte [0x300000]; inc eax; cmp eax, 26; jb +2; xor eax, eax
        code.extend_from_slice(&[
            0x0f, 0xb6, 0x04, 0x25, 0x00, 0x00, 0x30, 0x00, 0xff, 0xc0, 0x83, 0xf8, 0x1a, 0x72,
            0x02, 0x31, 0xc0,
        ]);
        // mov [0x300000], al; add al, 'a'; out dx, al; mov ecx, delay
        code.extend_from_slice(&[
            0x88, 0x04, 0x25, 0x00, 0x00, 0x30, 0x00, 0x04, b'a', 0xee, 0xb9,
        ]);
        code.extend_from_slice(&delay.to_le_bytes());
        // spin: dec ecx; jnz spin; jmp loop
        code.extend_from_slice(&[0xff, 0xc9, 0x75, 0xfc, 0xeb, 0xda]);
        code
    }

    /// Sets COM1 up as a listening driver does (OUT2 in MCR, the receive interrupt
    /// in IER: cabin holds input back until then), and reads `count` bytes from
    /// the receive FIFO, polling LSR (interrupts stay off: IF is clear) and
    /// spinning `delay` (at least 1) iterations after each byte (a slow reader).
    /// Writes each one back to COM1: the console output is exactly the input.
    pub fn echo_serial_input(count: u32, delay: u32) -> Vec<u8> {
        assert!(delay >= 1);
        // mov dx, 0x3fc (MCR); mov al, 8 (OUT2); out dx, al;
        // mov dx, 0x3f9 (IER); mov al, 1 (RX data); out dx, al; mov ecx, count
        let mut code = vec![
            0x66, 0xba, 0xfc, 0x03, 0xb0, 0x08, 0xee, 0x66, 0xba, 0xf9, 0x03, 0xb0, 0x01, 0xee,
            0xb9,
        ];
        code.extend_from_slice(&count.to_le_bytes());
        // next: mov dx, 0x3fd (LSR); poll: in al, dx; test al, 1 (data ready); jz poll
        let mut body = vec![0x66, 0xba, 0xfd, 0x03, 0xec, 0xa8, 0x01, 0x74, 0xfb];
        // mov dx, 0x3f8 (RBR/THR); in al, dx; out dx, al; mov ebx, delay
        body.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03, 0xec, 0xee, 0xbb]);
        body.extend_from_slice(&delay.to_le_bytes());
        // spin: dec ebx; jnz spin; dec ecx; jnz next
        body.extend_from_slice(&[0xff, 0xcb, 0x75, 0xfc, 0xff, 0xc9, 0x75]);
        let back = i8::try_from(body.len() + 1).unwrap();
        body.push((-back) as u8);
        code.extend_from_slice(&body);
        code
    }

    /// Triple fault: load an empty IDT (`lidt [rip+x]` of a zero-limit descriptor),
    /// then `ud2`; the #UD cannot be delivered, nor the #DF, so the CPU shuts down.
    pub fn triple_fault() -> Vec<u8> {
        // lidt [rip+2]; jmp over the 10-byte descriptor; ud2
        let mut code = vec![0x0f, 0x01, 0x1d, 0x02, 0x00, 0x00, 0x00, 0xeb, 0x0a];
        code.extend_from_slice(&[0u8; 10]);
        code.extend_from_slice(&[0x0f, 0x0b]);
        code
    }
}

/// Writes `bytes` to `dir/name` and returns the path as a String.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A guest artifact path from the environment `make test` sets up.
pub fn artifact(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: run these tests through `make test`"))
}

/// A private, writable copy of the busybox root image in `dir`.
pub fn rootfs_copy(dir: &Path) -> PathBuf {
    let copy = dir.join("rootfs.ext4");
    std::fs::copy(artifact("CABIN_ROOTFS"), &copy).unwrap();
    copy
}

/// Standard base64 (the guest decodes `cabin.sh=` with busybox `base64 -d`).
pub fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}

/// Kernel command line that boots the busybox rootfs on /dev/vda and has its init
/// run `script` (then print `CABIN-SH-EXIT=<status>`, sync and reboot).
pub fn script_cmdline(script: &str) -> String {
    format!(
        "console=ttyS0 reboot=k panic=-1 quiet root=/dev/vda rw cabin.sh={}",
        base64(script.as_bytes())
    )
}

/// One HTTP/1.1 request over the API socket; returns (status, body).
pub fn http(sock: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = UnixStream::connect(sock).expect("connect to the API socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let header_len = match response.parse(&raw).expect("a valid HTTP response") {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => panic!("truncated HTTP response"),
    };
    let status = response.code.unwrap();
    (
        status,
        String::from_utf8_lossy(&raw[header_len..]).into_owned(),
    )
}

/// The letters a counting guest ([`asm::count_in_memory_forever`]) printed, as
/// counter values 0..=25.
pub fn letters(text: &str) -> Vec<u8> {
    text.bytes()
        .filter(u8::is_ascii_lowercase)
        .map(|b| b - b'a')
        .collect()
}

/// Each value follows the one before it (mod 26), starting at `from`: nothing was
/// lost or repeated.
pub fn assert_counts_on(values: &[u8], from: u8) {
    let mut expected = from;
    for (i, &v) in values.iter().enumerate() {
        assert_eq!(v, expected, "value {i} of {values:?}");
        expected = (expected + 1) % 26;
    }
}

/// Snapshots, kills and restores three times over a tiny guest that does little but
/// write to COM1; each restored copy must print the letter after the last one.
///
/// Such a guest is almost always paused between an OUT's exit and its completion,
/// which KVM does on the next KVM_RUN (it moves RIP past the OUT only then): a
/// snapshot taken there would replay the OUT on restore, the letter printed twice,
/// unless cabin lets KVM finish the instruction first. (This host's software
/// hypervisor completes port writes before the exit, so here the test cannot
/// fail; it guards ordinary KVM, where `tests/snapshot.rs` runs it too.)
pub fn snapshot_port_writer_three_times(timeout: Duration) {
    let dir = scratch_dir("smoke-snapshot-io");
    let (mut cabin, sock) = start_tiny_guest(&dir, &asm::count_in_memory_forever(1));
    for round in 0..3 {
        assert!(cabin
            .stdout
            .wait_until(|text| letters(text).len() >= 100, timeout));
        let snap = dir.join(format!("snap{round}"));
        let out = ctl(&sock, &["snapshot", snap.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let last = *letters(&cabin.stdout.text()).last().unwrap();
        cabin.signal(libc::SIGKILL);
        cabin.wait_exit(timeout);
        let restored_sock = dir.join(format!("restored{round}.sock"));
        cabin = Cabin::spawn(&[
            "run",
            "--restore",
            snap.to_str().unwrap(),
            "--api-sock",
            restored_sock.to_str().unwrap(),
        ]);
        assert!(cabin
            .stdout
            .wait_until(|text| letters(text).len() >= 100, timeout));
        assert_counts_on(&letters(&cabin.stdout.text()), (last + 1) % 26);
        wait_for_socket(&restored_sock, &cabin);
        // The next round snapshots the restored VM.
        std::fs::rename(&restored_sock, &sock).unwrap();
    }
}

/// Writes `code` as a tiny guest into `dir`, starts a cabin (32 MiB) serving its API
/// on `dir/api.sock`, and boots the guest with `cabin ctl start`.
pub fn start_tiny_guest(dir: &Path, code: &[u8]) -> (Cabin, PathBuf) {
    let kernel = write_file(dir, "tiny.elf", &tiny_elf(code));
    let sock = dir.join("api.sock");
    let cabin = Cabin::spawn(&[
        "run",
        "--kernel",
        &kernel,
        "--memory",
        "32",
        "--api-sock",
        sock.to_str().unwrap(),
    ]);
    wait_for_socket(&sock, &cabin);
    let started = ctl(&sock, &["start"]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    (cabin, sock)
}
