#!/usr/bin/env python3
"""Disk, network and lifecycle benchmark: cabin against QEMU -M microvm.

Run by resources/bench/io.sh (directly where cabin's `check` says guests boot,
else inside the nested sandbox). Every guest is the project kernel booting the
busybox ext4 root image (`root=/dev/vda rw`), whose init runs a shell script
passed base64-encoded as `cabin.sh=` on the kernel command line, prints
`CABIN-SH-EXIT=<n>` and reboots. Both VMMs boot the same kernel, image and
script, one boot per VMM and round, interleaved (cabin, QEMU, cabin, ...).

Sections (`--only` picks some):

disk      A second raw disk (a fresh sparse file of --disk-mib MiB) is attached
          next to the root image. In the guest, with busybox dd and direct I/O:
            seq write   dd if=/dev/zero of=DISK bs=1M count=MIB oflag=direct
            seq read    dd if=DISK of=/dev/null bs=1M count=MIB iflag=direct
            4k QD1 read one dd: bs=4k count=--qd1-reads iflag=direct (each 4 KiB
                        request completes before the next is sent)
            4k random   a shell loop of --rand-reads dd processes, each reading one
                        4 KiB block at a random offset (skip=$RANDOM-based) with
                        iflag=direct; timed as a whole. The same loop reading
                        /dev/zero instead is timed too: the difference is the
                        I/O part, so "random read IOPS" is given both raw (with a
                        dd process per read, what busybox allows) and with the
                        process start subtracted.
          Timestamps come from busybox `adjtimex` (microseconds; busybox `date`
          has no %N); the cost of taking a timestamp is measured (empty
          intervals) and subtracted. The same script runs on the host side
          (the sandbox, when nested) with the host's busybox against a file
          next to the guests' backing files, and optionally against a file in
          --host-direct-dir with O_DIRECT (see the table notes).
debian    The Debian 12 image (--debian-image) booted from /dev/vda, 2 vCPUs,
          512 MiB: VMM launch to `CABIN-DEBIAN-STATE=` on the console.
net       A network namespace made here, a TAP in it (10.79.0.1/24; the guest
          is 10.79.0.2/24), the VMM run inside the namespace with
          `ip netns exec`. With busybox on both ends:
            guest->host  dd if=/dev/zero bs=64k | nc HOST PORT; the host's nc
                         writes to /dev/null; timed in the guest until its nc
                         returns, which is after the host has read everything
                         and closed
            host->guest  dd | nc -l on the host; the guest's nc reads to EOF
            TCP RR       --rr round trips of a 2-byte line over one TCP
                         connection to a host `nc -l -e cat` echo, from the
                         guest's shell (builtin echo/read through FIFOs, no
                         process per message); time per round trip
            ping         busybox ping -c --ping-count -i 0.02: average RTT
lifecycle cabin run --api-sock; configuration with PUT /machine-config,
          /boot-source, /drives/rootfs; then the time from just before
          `cabin ctl start` (InstanceStart) is spawned to the init's
          `CABIN-ROOTFS-READY` on the console; then, on the running guest,
          --pause-cycles times each: how long `cabin ctl pause` and
          `cabin ctl resume` take to return, and how long PATCH /vm
          Paused/Resumed take over the socket (no process start). Peer: QEMU
          started with -S and QMP: `cont` to the marker, QMP `stop`/`cont`.

Progress goes to stderr. Results go to stdout as Markdown and JSON between
marker lines (io.sh cuts them out):
  ===== IOBENCH MARKDOWN BEGIN ===== ... ===== IOBENCH MARKDOWN END =====
  ===== IOBENCH JSON BEGIN =====     ... ===== IOBENCH JSON END =====

Exit status: 0 all measurements succeeded, 1 some failed (tables still
printed, failures listed), 2 bad arguments or missing inputs.

Python 3 standard library only. The staging (VMM binaries, libraries and
firmware copied to a tmpfs) and the summary/table cell helpers are those of
bootbench.py, imported.
"""

import argparse
import base64
import bisect
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # the repository (read-only in the sandbox) stays clean
sys.path.insert(0, HERE)
import bootbench as bb  # noqa: E402  (staging, summaries, table cells)

MD_BEGIN = "===== IOBENCH MARKDOWN BEGIN ====="
MD_END = "===== IOBENCH MARKDOWN END ====="
JSON_BEGIN = "===== IOBENCH JSON BEGIN ====="
JSON_END = "===== IOBENCH JSON END ====="
SCHEMA = "cabin-iobench/1"

SECTIONS = ("disk", "debian", "net", "lifecycle")
VMMS = ("cabin", "qemu")
LABEL = {"cabin": "cabin", "qemu": "QEMU microvm", "host": "host-side file",
         "host_direct": "host-side O_DIRECT file"}

# Guest kernel command lines: QEMU's microvm has no i8042, so reboot=k would hang.
BASE_CMDLINE = {
    "cabin": "console=ttyS0 reboot=k panic=-1 quiet root=/dev/vda rw",
    "qemu": "console=ttyS0 reboot=t panic=-1 quiet root=/dev/vda rw",
}
MAX_CMDLINE = 2047  # x86 COMMAND_LINE_SIZE is 2048 with the NUL

ROOTFS_MARKER = b"CABIN-ROOTFS-READY"
SH_EXIT = b"CABIN-SH-EXIT="
DEBIAN_MARKER = b"CABIN-DEBIAN-STATE="

NETNS_PREFIX = "cabin-iob"
TAP = "iobtap0"
HOST_IP, GUEST_IP, PREFIX = "10.79.0.1", "10.79.0.2", 24
PORT_G2H, PORT_H2G, PORT_RR = 5101, 5102, 5103
HOST_BUSYBOX = "/bin/busybox"

# Console lines after which a guest will never reach its marker: fail at once
# instead of waiting for the timeout.
FATAL = (b"Kernel panic - not syncing", b"Freezing execution")

MAX_CONSECUTIVE_FAILURES = 2
TAIL_BYTES = 3000


def log(msg):
    print(f"iobench: {msg}", file=sys.stderr, flush=True)


BenchError = bb.BenchError


# --- a VMM process and its console ---------------------------------------------


class Console:
    """Collects a pipe in a thread and remembers when each chunk arrived, so the
    moment a marker first appeared is known without polling."""

    def __init__(self, pipe):
        self.buf = bytearray()
        self.ends = []  # end offset of each chunk, increasing
        self.times = []  # monotonic time each chunk was read
        self.closed = False
        self.cond = threading.Condition()
        self._pipe = pipe
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        fd = self._pipe.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            now = time.monotonic()
            with self.cond:
                if not chunk:
                    self.closed = True
                    self.cond.notify_all()
                    return
                self.buf += chunk
                self.ends.append(len(self.buf))
                self.times.append(now)
                self.cond.notify_all()

    def _arrival(self, end):
        i = bisect.bisect_left(self.ends, end)
        return self.times[min(i, len(self.times) - 1)]

    def wait_for(self, marker, deadline, start=0):
        """(time the marker arrived, offset after it); BenchError on timeout/EOF."""
        with self.cond:
            while True:
                pos = self.buf.find(marker, start)
                if pos >= 0:
                    end = pos + len(marker)
                    return self._arrival(end), end
                for bad in FATAL:
                    if self.buf.find(bad, start) >= 0:
                        raise BenchError(f"the guest failed ({bad.decode()}) before {marker.decode()}")
                left = deadline - time.monotonic()
                if self.closed:
                    raise BenchError(f"the VMM's output ended before {marker.decode()}")
                if left <= 0:
                    raise BenchError(f"no {marker.decode()} in time")
                self.cond.wait(min(left, 1.0))

    def wait_line(self, marker, deadline, start=0):
        """Like wait_for, then also the rest of that line (waits for its end)."""
        t, end = self.wait_for(marker, deadline, start)
        with self.cond:
            while True:
                nl = self.buf.find(b"\n", end)
                if nl >= 0:
                    return t, self.buf[end:nl].decode("utf-8", "replace").strip(), nl
                if self.closed or time.monotonic() > deadline:
                    return t, self.buf[end:].decode("utf-8", "replace").strip(), len(self.buf)
                self.cond.wait(0.5)

    def text(self):
        with self.cond:
            return self.buf.decode("utf-8", "replace").replace("\r", "")


class Vm:
    """A VMM process: stdin a pipe kept open, stdout collected, stderr to a file."""

    def __init__(self, argv, env, netns=None):
        self.argv = argv
        full = (["ip", "netns", "exec", netns] if netns else []) + argv
        self.errf = tempfile.TemporaryFile(prefix="iobench-stderr-")
        self.t_spawn = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                full, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errf,
                bufsize=0, close_fds=True, env=env)
        except OSError as e:
            self.errf.close()
            raise BenchError(f"cannot start {argv[0]}: {e}") from e
        self.console = Console(self.proc.stdout)

    def details(self):
        try:
            self.errf.flush()
            self.errf.seek(0)
            err = self.errf.read()[-TAIL_BYTES:].decode("utf-8", "replace")
        except (OSError, ValueError):
            err = ""
        out = self.console.text()[-TAIL_BYTES:]
        return (f" ({bb._exit_text(self.proc.poll())})\n--- console tail ---\n{out}"
                f"\n--- stderr tail ---\n{err}\n---")

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=None, grace=0.0):
        """Send SIG (if any) and give the VMM GRACE seconds to exit, then kill it."""
        if sig is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except OSError:
                pass
            self.wait_exit(grace)
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass
        self.proc.wait()
        # The reader sees EOF once the process is gone; close the pipe after it.
        self.console._thread.join(timeout=10)
        for f in (self.proc.stdin, self.proc.stdout, self.errf):
            try:
                f.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


# --- guest scripts -------------------------------------------------------------------

# t NAME: append "T NAME" and busybox adjtimex's report, whose time.tv_sec and
# time.tv_usec lines give the time to the microsecond (busybox date has no %N),
# to $TF: one process per timestamp. The four empty intervals (n0-n1, n2-n3)
# measure what taking a timestamp adds to an interval; it is subtracted.
STAMP = ("t(){ echo T $1 >>$TF;adjtimex >>$TF; }\n"
         ": >$TF;t n0;t n1;t n2;t n3\n")
# What the scripts print at the end: the stamp lines only.
STAMP_DUMP = "grep -e '^T ' -e tv_ $TF\n"

# Variables set by the caller: D (device or file), M (MiB), Q (QD1 reads),
# N (random reads), W/R (dd flags for writing/reading), E (error file), TF.
DISK_BODY = (
    "t w0;dd if=/dev/zero of=$D bs=1M count=$M $W conv=notrunc 2>$E||{ cat $E;exit 3;};t w1\n"
    "t r0;dd if=$D of=/dev/null bs=1M count=$M $R 2>$E||{ cat $E;exit 4;};t r1\n"
    "t q0;dd if=$D of=/dev/null bs=4k count=$Q $R 2>$E||{ cat $E;exit 5;};t q1\n"
    "B=$((M*256));i=0;t x0\n"
    "while [ $i -lt $N ];do dd if=$D of=/dev/null bs=4k count=1 "
    "skip=$(((RANDOM*32768+RANDOM)%B)) $R 2>/dev/null||exit 6;i=$((i+1));done;t x1\n"
    "i=0;t z0\n"
    "while [ $i -lt $N ];do dd if=/dev/zero of=/dev/null bs=4k count=1 "
    "skip=$(((RANDOM*32768+RANDOM)%B)) 2>/dev/null||exit 7;i=$((i+1));done;t z1\n"
    + STAMP_DUMP
)


def find_data_disk(mib):
    """Guest shell: set D to the virtio disk of MIB MiB, the data disk (the order of
    virtio-mmio devices may differ between VMMs); D stays empty if there is none."""
    sectors = mib * 2048
    return f"for d in /sys/block/vd*;do [ \"$(cat $d/size)\" = {sectors} ]&&D=/dev/${{d##*/}};done\n"


def disk_guest_script(a):
    return (
        f"TF=/tmp/t;E=/tmp/e;M={a.disk_mib};Q={a.qd1_reads};N={a.rand_reads}\n"
        "W=oflag=direct;R=iflag=direct;D=\n"
        + find_data_disk(a.disk_mib) +
        "[ -n \"$D\" ]||{ echo NO-DATA-DISK;ls /sys/block;exit 2;};echo DATA-DISK=$D\n"
        + STAMP + DISK_BODY
    )


def host_disk_script(a, path, direct, tf, ef):
    flags = "W=oflag=direct;R=iflag=direct" if direct else "W=;R="
    return (
        f"TF={tf};E={ef};M={a.disk_mib};Q={a.qd1_reads};N={a.rand_reads};D={path}\n"
        f"{flags}\n" + STAMP + DISK_BODY
    )


def net_guest_script(a):
    return (
        f"TF=/tmp/t;H={HOST_IP};M={a.net_mib};N={a.rr}\n"
        f"ip link set eth0 up&&ip addr add {GUEST_IP}/{PREFIX} dev eth0||exit 9\n"
        # The first ping also waits for the link and ARP.
        "ping -c 3 -W 10 $H >/dev/null 2>&1||{ echo NO-PING;exit 8;}\n"
        + STAMP +
        f"t s0;dd if=/dev/zero bs=64k count=$((M*16)) 2>/dev/null|nc $H {PORT_G2H}||exit 3;t s1\n"
        "mkfifo /tmp/h /tmp/i /tmp/o\n"
        f"t r0;nc $H {PORT_H2G} </tmp/h >/dev/null & exec 3>/tmp/h;wait $!||exit 4;t r1;exec 3>&-\n"
        f"nc $H {PORT_RR} </tmp/i >/tmp/o & exec 3>/tmp/i 4</tmp/o\n"
        "i=0;t l0;while [ $i -lt $N ];do echo x>&3;read l<&4||exit 5;i=$((i+1));done;t l1\n"
        "exec 3>&- 4<&-;wait\n"
        f"ping -c {a.ping_count} -i 0.02 $H|grep round-trip\n"
        + STAMP_DUMP
    )


LIFECYCLE_SCRIPT = "echo LOOP-STARTED;while :;do usleep 200000;done\n"


def script_cmdline(vmm, script):
    line = f"{BASE_CMDLINE[vmm]} cabin.sh={base64.b64encode(script.encode()).decode()}"
    if len(line) > MAX_CMDLINE:
        raise BenchError(f"guest command line too long ({len(line)} bytes): shorten the script")
    return line


def parse_stamps(text):
    """{name: seconds} from "T name" lines, each followed by adjtimex's
    time.tv_sec and time.tv_usec lines."""
    stamps, name, sec = {}, None, None
    for line in text.replace("\r", "").splitlines():
        line = line.strip()
        m = re.match(r"^T (\w+)$", line)
        if m:
            name, sec = m.group(1), None
            continue
        m = re.match(r"^time\.tv_(sec|usec):\s+(\d+)", line)
        if m and name:
            if m.group(1) == "sec":
                sec = int(m.group(2))
            elif sec is not None:
                stamps[name] = sec + int(m.group(2)) / 1e6
                name = None
    return stamps


def interval(stamps, a, b):
    """Seconds between stamps a and b less the cost of taking a stamp, or None
    when the interval is within that cost (too short to measure this way)."""
    for k in (a, b, "n0", "n1", "n2", "n3"):
        if k not in stamps:
            raise BenchError(f"timestamp {k} missing from the output")
    overhead = statistics.mean([stamps["n1"] - stamps["n0"], stamps["n3"] - stamps["n2"]])
    t = stamps[b] - stamps[a] - overhead
    return (t if t > 0 else None), overhead


def per(amount, seconds):
    return amount / seconds if seconds else None


def disk_results(a, stamps):
    w, ovh = interval(stamps, "w0", "w1")
    r, _ = interval(stamps, "r0", "r1")
    q, _ = interval(stamps, "q0", "q1")
    x, _ = interval(stamps, "x0", "x1")
    z, _ = interval(stamps, "z0", "z1")
    per_read = (x - z) / a.rand_reads if x is not None and z is not None else None
    return {
        "seq_write_mibs": per(a.disk_mib, w),
        "seq_read_mibs": per(a.disk_mib, r),
        "qd1_read_iops": per(a.qd1_reads, q),
        "rand_read_iops_raw": per(a.rand_reads, x),
        "rand_read_iops_net": (1.0 / per_read) if per_read and per_read > 0 else None,
        "raw_s": {"write": w, "read": r, "qd1": q, "rand_loop": x, "zero_loop": z},
        "stamp_overhead_s": ovh,
    }


# --- VMM command lines ----------------------------------------------------------------


def cabin_argv(ctx, disks, cmdline, memory, vcpus, nets=(), root_readonly=False):
    argv = [ctx.bin["cabin"], "run", "--kernel", ctx.kernel, "--memory", str(memory),
            "--vcpus", str(vcpus), "--cmdline", cmdline]
    for i, d in enumerate(disks):
        ro = ",readonly=on" if i == 0 and root_readonly else ""
        argv += ["--disk", f"path={d}{ro}"]
    for n in nets:
        argv += ["--net", f"tap={n}"]
    return argv


def qemu_argv(ctx, disks, cmdline, memory, vcpus, nets=(), extra=(), root_readonly=False):
    a = ctx.args
    argv = [ctx.bin["qemu"], "-M", a.qemu_machine, "-enable-kvm", "-cpu", "host",
            "-m", str(memory), "-smp", str(vcpus),
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-serial", "stdio", "-kernel", ctx.kernel, "-append", cmdline]
    for i, d in enumerate(disks):
        ro = ",readonly=on" if i == 0 and root_readonly else ""
        argv += ["-drive", f"id=d{i},file={d},format=raw,if=none{ro}",
                 "-device", f"virtio-blk-device,drive=d{i}"]
    for i, n in enumerate(nets):
        argv += ["-netdev", f"tap,id=n{i},ifname={n},script=no,downscript=no,vhost=off",
                 "-device", f"virtio-net-device,netdev=n{i}"]
    return argv + list(extra)


def vmm_argv(ctx, vmm, disks, script, memory=256, vcpus=1, nets=()):
    cmdline = script_cmdline(vmm, script)
    if vmm == "cabin":
        return cabin_argv(ctx, disks, cmdline, memory, vcpus, nets)
    return qemu_argv(ctx, disks, cmdline, memory, vcpus, nets)


def run_script_guest(ctx, vmm, disks, script, timeout, memory=256, netns=None, nets=()):
    """Boot, let the script run to CABIN-SH-EXIT; returns (status, console text)."""
    argv = vmm_argv(ctx, vmm, disks, script, memory=memory, nets=nets)
    with Vm(argv, ctx.env[vmm], netns=netns) as vm:
        deadline = vm.t_spawn + timeout
        try:
            vm.console.wait_for(ROOTFS_MARKER, deadline)
            _, status, _ = vm.console.wait_line(SH_EXIT, deadline)
        except BenchError as e:
            raise BenchError(f"{e}{vm.details()}") from e
        text = vm.console.text()
        vm.wait_exit(20)  # the guest reboots; cabin and QEMU (-no-reboot) exit
        if status != "0":
            raise BenchError(f"guest script exit status {status!r}{vm.details()}")
        return text, argv


# --- the sections ------------------------------------------------------------------------


class Context:
    pass


def stage_binary(name, binary, scratch):
    """Copy BINARY, its libraries and (for QEMU) firmware under SCRATCH/NAME, as
    bootbench.stage_vmm does; returns (staged path, extra environment)."""
    fw = bb.qemu_firmware(binary) if name == "qemu" else []
    staged, extra = bb.stage_vmm(binary, os.path.join(scratch, name), fw)
    if name == "qemu":
        moddir = bb.qemu_module_dir(binary)
        if moddir:
            extra["QEMU_MODULE_DIR"] = moddir
    return staged, extra


def copy_rootfs(ctx, name):
    return bb.stage_file(ctx.rootfs, os.path.join(ctx.scratch, name))


def sparse_file(path, mib):
    with open(path, "wb") as f:
        f.truncate(mib << 20)
    return path


def host_bin_dir(scratch):
    """A directory of busybox applet links, first in PATH for host-side scripts."""
    d = os.path.join(scratch, "busybox-bin")
    os.makedirs(d, exist_ok=True)
    for applet in ("sh", "dd", "adjtimex", "awk", "cat"):
        p = os.path.join(d, applet)
        if not os.path.lexists(p):
            os.symlink(HOST_BUSYBOX, p)
    return d


def supports_odirect(directory):
    probe = os.path.join(directory, ".iobench-odirect-probe")
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o600)
        os.close(fd)
        return True
    except OSError:
        return False
    finally:
        try:
            os.unlink(probe)
        except OSError:
            pass


def fs_type(path):
    """Filesystem type of the mount holding PATH, from /proc/mounts."""
    best, kind = "", "?"
    real = os.path.realpath(path)
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, kind = mnt, parts[2]
    except OSError:
        pass
    return kind


def host_disk_once(ctx, directory, direct):
    a = ctx.args
    path = sparse_file(os.path.join(directory, f"iobench-host-{os.getpid()}.img"), a.disk_mib)
    tf = os.path.join(ctx.scratch, "host-stamps")
    ef = os.path.join(ctx.scratch, "host-err")
    env = dict(os.environ, PATH=ctx.busybox_bin + ":" + os.environ.get("PATH", ""))
    try:
        r = subprocess.run([HOST_BUSYBOX, "sh", "-c", host_disk_script(a, path, direct, tf, ef)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=env, timeout=a.timeout)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"host-side dd script timed out after {a.timeout:g} s") from e
    finally:
        for p in (path, tf, ef):
            try:
                os.unlink(p)
            except OSError:
                pass
    out = r.stdout.decode("utf-8", "replace")
    if r.returncode != 0:
        raise BenchError(f"host-side dd script: exit status {r.returncode}\n{out[-TAIL_BYTES:]}")
    return disk_results(a, parse_stamps(out))


def section_disk(ctx, rec):
    a = ctx.args
    hosts = [("host", ctx.disk_dir, ctx.disk_dir_direct)]
    if a.host_direct_dir:
        hosts.append(("host_direct", a.host_direct_dir, True))
    rec["host_targets"] = {
        name: {"dir": d, "fs": fs_type(d), "direct": direct} for name, d, direct in hosts}
    script = disk_guest_script(a)
    rec["guest_script"] = script
    for i in range(a.runs):
        for vmm in ctx.vmms:
            def one(vmm=vmm, i=i):
                root = copy_rootfs(ctx, f"disk-root-{vmm}.ext4")
                data = sparse_file(os.path.join(ctx.disk_dir, f"iobench-data-{os.getpid()}.img"),
                                   a.disk_mib)
                try:
                    text, argv = run_script_guest(ctx, vmm, [root, data], script, a.timeout)
                finally:
                    for p in (root, data):
                        os.unlink(p)
                rec.setdefault("argv", {})[vmm] = argv
                m = re.search(r"DATA-DISK=(\S+)", text)
                s = disk_results(a, parse_stamps(text))
                s["guest_disk"] = m.group(1) if m else None
                return s
            ctx.measure("disk", vmm, i, one, rec)
        for name, d, direct in hosts:
            ctx.measure("disk", name, i, lambda d=d, direct=direct: host_disk_once(ctx, d, direct), rec)


def section_debian(ctx, rec):
    a = ctx.args
    rec["image"] = a.debian_image
    for i in range(a.runs):
        for vmm in ctx.vmms:
            def one(vmm=vmm):
                image = bb.stage_file(a.debian_image, os.path.join(ctx.scratch, f"debian-{vmm}"))
                try:
                    cmd = BASE_CMDLINE[vmm]
                    argv = (cabin_argv(ctx, [image], cmd, 512, 2) if vmm == "cabin"
                            else qemu_argv(ctx, [image], cmd, 512, 2))
                    rec.setdefault("argv", {})[vmm] = argv
                    with Vm(argv, ctx.env[vmm]) as vm:
                        try:
                            t, state, _ = vm.console.wait_line(
                                DEBIAN_MARKER, vm.t_spawn + a.debian_timeout)
                        except BenchError as e:
                            raise BenchError(f"{e}{vm.details()}") from e
                        m = re.search(r"CABIN-DEBIAN-UPTIME=([0-9.]+)", vm.console.text())
                finally:
                    os.unlink(image)
                return {"boot_s": t - vm.t_spawn, "state": state,
                        "guest_uptime_s": float(m.group(1)) if m else None}
            ctx.measure("debian", vmm, i, one, rec)


def run_ok(argv, what):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    if r.returncode != 0:
        raise BenchError(f"{what}: {' '.join(argv)}: {r.stderr.decode('utf-8', 'replace').strip()}")
    return r.stdout.decode("utf-8", "replace")


def tcp_listening(proc_net_tcp, port):
    """Whether the text of /proc/net/tcp (or tcp6) has a socket listening on PORT."""
    local = f":{port:04X}"
    for line in proc_net_tcp.splitlines():
        f = line.split()
        if len(f) > 3 and f[1].endswith(local) and f[3] == "0A":
            return True
    return False


class Netns:
    def __init__(self):
        self.name = f"{NETNS_PREFIX}-{os.getpid()}"
        subprocess.run(["ip", "netns", "del", self.name], stderr=subprocess.DEVNULL, check=False)
        run_ok(["ip", "netns", "add", self.name], "creating the network namespace")
        self.ip("link", "set", "lo", "up")

    def ip(self, *args):
        return run_ok(["ip", "-n", self.name, *args], "ip")

    def exec_argv(self, *argv):
        return ["ip", "netns", "exec", self.name, *argv]

    def add_tap(self):
        self.ip("tuntap", "add", "dev", TAP, "mode", "tap")
        self.ip("addr", "add", f"{HOST_IP}/{PREFIX}", "dev", TAP)
        self.ip("link", "set", TAP, "up")

    def del_tap(self):
        subprocess.run(["ip", "-n", self.name, "link", "del", TAP],
                       stderr=subprocess.DEVNULL, check=False)

    def listening(self, port):
        r = subprocess.run(self.exec_argv("cat", "/proc/net/tcp", "/proc/net/tcp6"),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)
        return tcp_listening(r.stdout.decode("utf-8", "replace"), port)

    def close(self):
        self.del_tap()
        subprocess.run(["ip", "netns", "del", self.name], stderr=subprocess.DEVNULL, check=False)


def net_once(ctx, ns, vmm, rec):
    a = ctx.args
    ns.add_tap()
    helpers = []
    try:
        # Each helper in a process group of its own, so that the shell pipeline's
        # children go with it.
        def helper(argv, stdin=subprocess.DEVNULL):
            helpers.append(subprocess.Popen(
                ns.exec_argv(*argv), stdin=stdin, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True))
        # guest -> host: the receiver's stdin stays open (a pipe never written), so
        # it never half-closes; it exits when the guest's nc has sent everything.
        helper([HOST_BUSYBOX, "nc", "-l", "-p", str(PORT_G2H)], stdin=subprocess.PIPE)
        helper([HOST_BUSYBOX, "sh", "-c",
                f"{HOST_BUSYBOX} dd if=/dev/zero bs=64k count={a.net_mib * 16} 2>/dev/null"
                f" | {HOST_BUSYBOX} nc -l -p {PORT_H2G}"])
        helper([HOST_BUSYBOX, "nc", "-l", "-p", str(PORT_RR), "-e", "cat"])
        deadline = time.monotonic() + 60
        for port in (PORT_G2H, PORT_H2G, PORT_RR):
            while not ns.listening(port):
                if time.monotonic() > deadline:
                    raise BenchError(f"the host-side nc on port {port} does not listen")
                time.sleep(0.05)  # polling the socket table, bounded by the deadline
        root = copy_rootfs(ctx, f"net-root-{vmm}.ext4")
        try:
            text, argv = run_script_guest(ctx, vmm, [root], net_guest_script(a), a.timeout,
                                          netns=ns.name, nets=[TAP])
        finally:
            os.unlink(root)
        rec.setdefault("argv", {})[vmm] = ["ip", "netns", "exec", ns.name] + argv
    finally:
        for h in helpers:
            try:
                os.killpg(h.pid, signal.SIGKILL)
            except OSError:
                pass
            h.wait()
            if h.stdin:
                h.stdin.close()
        ns.del_tap()
    st = parse_stamps(text)
    s, ovh = interval(st, "s0", "s1")
    r, _ = interval(st, "r0", "r1")
    rr, _ = interval(st, "l0", "l1")
    m = re.search(r"round-trip min/avg/max = ([0-9.]+)/([0-9.]+)/([0-9.]+) ms", text)
    return {
        "g2h_mibs": per(a.net_mib, s),
        "h2g_mibs": per(a.net_mib, r),
        "rr_us": rr / a.rr * 1e6 if rr else None,
        "ping_avg_ms": float(m.group(2)) if m else None,
        "ping_min_ms": float(m.group(1)) if m else None,
        "raw_s": {"g2h": s, "h2g": r, "rr": rr},
        "stamp_overhead_s": ovh,
    }


def section_net(ctx, rec):
    a = ctx.args
    rec["guest_script"] = net_guest_script(a)
    ns = Netns()
    rec["netns"] = ns.name
    try:
        for i in range(a.runs):
            for vmm in ctx.vmms:
                ctx.measure("net", vmm, i, lambda vmm=vmm: net_once(ctx, ns, vmm, rec), rec)
    finally:
        ns.close()


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def api(sock, method, path, body=None):
    c = UnixHTTPConnection(sock)
    try:
        payload = json.dumps(body) if body is not None else None
        c.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read().decode("utf-8", "replace")
        return r.status, data
    finally:
        c.close()


def api_ok(sock, method, path, body=None):
    status, data = api(sock, method, path, body)
    if status // 100 != 2:
        raise BenchError(f"{method} {path}: HTTP {status} {data}")
    return data


def wait_path(path, vm, timeout=60):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if vm.proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"no socket {path}{vm.details()}")
        time.sleep(0.01)  # polling for the socket file, bounded by the deadline


def timed_run(argv, env, what):
    t0 = time.monotonic()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env, timeout=60)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        raise BenchError(f"{what}: exit status {r.returncode}: "
                         f"{r.stderr.decode('utf-8', 'replace').strip()}")
    return dt, t0


def lifecycle_cabin(ctx, rec):
    a = ctx.args
    root = copy_rootfs(ctx, "life-root-cabin.ext4")
    sock = os.path.join(ctx.scratch, "cabin-api.sock")
    cabin = ctx.bin["cabin"]
    env = ctx.env["cabin"]
    ctl = lambda *x: [cabin, "ctl", "--api-sock", sock, *x]  # noqa: E731
    argv = [cabin, "run", "--api-sock", sock]
    rec.setdefault("argv", {})["cabin"] = argv
    try:
        with Vm(argv, env) as vm:
            try:
                wait_path(sock, vm)
                api_ok(sock, "PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 256})
                api_ok(sock, "PUT", "/boot-source", {
                    "kernel_image_path": ctx.kernel,
                    "boot_args": script_cmdline("cabin", LIFECYCLE_SCRIPT)})
                api_ok(sock, "PUT", "/drives/rootfs", {
                    "drive_id": "rootfs", "path_on_host": root,
                    "is_root_device": True, "is_read_only": False})
                ctl_start, t0 = timed_run(ctl("start"), env, "cabin ctl start")
                t_marker, _ = vm.console.wait_for(ROOTFS_MARKER, t0 + a.timeout)
                vm.console.wait_for(b"LOOP-STARTED", t0 + a.timeout)
                s = {"start_to_marker_s": t_marker - t0, "ctl_start_s": ctl_start,
                     "ctl_pause_s": [], "ctl_resume_s": [], "api_pause_s": [], "api_resume_s": []}
                for _ in range(a.pause_cycles):
                    time.sleep(0.2)  # let the guest run between the steps
                    s["ctl_pause_s"].append(timed_run(ctl("pause"), env, "cabin ctl pause")[0])
                    time.sleep(0.2)
                    s["ctl_resume_s"].append(timed_run(ctl("resume"), env, "cabin ctl resume")[0])
                    time.sleep(0.2)
                    t = time.monotonic()
                    api_ok(sock, "PATCH", "/vm", {"state": "Paused"})
                    s["api_pause_s"].append(time.monotonic() - t)
                    time.sleep(0.2)
                    t = time.monotonic()
                    api_ok(sock, "PATCH", "/vm", {"state": "Resumed"})
                    s["api_resume_s"].append(time.monotonic() - t)
                state = json.loads(api_ok(sock, "GET", "/")).get("state")
                if state != "Running":
                    raise BenchError(f"state after the pause/resume cycles: {state!r}")
            except (BenchError, OSError, ValueError, subprocess.TimeoutExpired) as e:
                raise BenchError(f"{e}{vm.details()}") from e
            vm.stop(signal.SIGTERM, grace=10)
        return s
    finally:
        os.unlink(root)
        if os.path.exists(sock):
            os.unlink(sock)


class Qmp:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(60)
        self.s.connect(path)
        self.f = self.s.makefile("rwb", buffering=0)
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        while True:
            line = self.f.readline()
            if not line:
                raise BenchError("QMP connection closed")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def cmd(self, name):
        self.f.write(json.dumps({"execute": name}).encode() + b"\n")
        msg = self._read()
        if "error" in msg:
            raise BenchError(f"QMP {name}: {msg['error']}")
        return msg

    def close(self):
        for x in (self.f, self.s):
            try:
                x.close()
            except OSError:
                pass


def lifecycle_qemu(ctx, rec):
    a = ctx.args
    root = copy_rootfs(ctx, "life-root-qemu.ext4")
    qsock = os.path.join(ctx.scratch, "qmp.sock")
    argv = qemu_argv(ctx, [root], script_cmdline("qemu", LIFECYCLE_SCRIPT), 256, 1,
                     extra=["-S", "-qmp", f"unix:{qsock},server=on,wait=off"])
    rec.setdefault("argv", {})["qemu"] = argv
    try:
        with Vm(argv, ctx.env["qemu"]) as vm:
            qmp = None
            try:
                wait_path(qsock, vm)
                qmp = Qmp(qsock)
                t0 = time.monotonic()
                qmp.cmd("cont")
                t_ret = time.monotonic()
                t_marker, _ = vm.console.wait_for(ROOTFS_MARKER, t0 + a.timeout)
                vm.console.wait_for(b"LOOP-STARTED", t0 + a.timeout)
                s = {"start_to_marker_s": t_marker - t0, "qmp_cont_start_s": t_ret - t0,
                     "api_pause_s": [], "api_resume_s": []}
                for _ in range(a.pause_cycles):
                    time.sleep(0.2)
                    t = time.monotonic()
                    qmp.cmd("stop")
                    s["api_pause_s"].append(time.monotonic() - t)
                    time.sleep(0.2)
                    t = time.monotonic()
                    qmp.cmd("cont")
                    s["api_resume_s"].append(time.monotonic() - t)
            except (BenchError, OSError, ValueError) as e:
                raise BenchError(f"{e}{vm.details()}") from e
            finally:
                if qmp:
                    qmp.close()
        return s
    finally:
        os.unlink(root)
        if os.path.exists(qsock):
            os.unlink(qsock)


def section_lifecycle(ctx, rec):
    a = ctx.args
    for i in range(a.lifecycle_runs):
        for vmm in ctx.vmms:
            fn = lifecycle_cabin if vmm == "cabin" else lifecycle_qemu
            ctx.measure("lifecycle", vmm, i, lambda fn=fn: fn(ctx, rec), rec)


# --- summaries and tables ---------------------------------------------------------------


def values(samples, key):
    out = []
    for s in samples:
        v = s.get(key)
        if isinstance(v, list):
            out.extend(x for x in v if x is not None)
        elif v is not None:
            out.append(v)
    return out


def summarize_section(rec, keys, scale=None):
    scale = scale or {}
    summary = {}
    for who, samples in rec["samples"].items():
        summary[who] = {}
        for k in keys:
            vals = [v * scale.get(k, 1.0) for v in values(samples, k)]
            summary[who][k] = bb.summarize(vals)
    rec["summary"] = summary
    return summary


def cell(summary, who, key, fmt):
    s = summary.get(who, {}).get(key)
    return bb.cell(s, fmt) if s else "–"


def ratio(summary, a, b, key):
    return bb.ratio_cell(summary.get(a, {}).get(key), summary.get(b, {}).get(key))


DISK_ROWS = [
    ("seq_write_mibs", "Sequential write, 1 MiB blocks (MiB/s, higher is better)", "{:.1f}"),
    ("seq_read_mibs", "Sequential read, 1 MiB blocks (MiB/s, higher is better)", "{:.1f}"),
    ("qd1_read_iops", "4 KiB reads at queue depth 1, one dd (IOPS, higher is better)", "{:.0f}"),
    ("rand_read_iops_raw", "4 KiB random reads, one dd per read (IOPS incl. process start)", "{:.1f}"),
    ("rand_read_iops_net", "4 KiB random reads, process start subtracted (IOPS)", "{:.0f}"),
]
NET_ROWS = [
    ("g2h_mibs", "TCP guest → host (MiB/s, higher is better)", "{:.1f}"),
    ("h2g_mibs", "TCP host → guest (MiB/s, higher is better)", "{:.1f}"),
    ("rr_us", "TCP request/response, 1 connection (µs per round trip, lower is better)", "{:.0f}"),
    ("ping_avg_ms", "ICMP ping average RTT (ms, lower is better)", "{:.3f}"),
]
LIFE_ROWS = [
    ("start_to_marker_s", "Start → init marker `CABIN-ROOTFS-READY` (s)", "{:.3f}", True),
    ("ctl_start_s", "`cabin ctl start` returns (ms)", "{:.1f}", False),
    ("qmp_cont_start_s", "QMP `cont` (start) returns (ms)", "{:.1f}", False),
    ("ctl_pause_s", "`cabin ctl pause` returns (ms)", "{:.1f}", False),
    ("ctl_resume_s", "`cabin ctl resume` returns (ms)", "{:.1f}", False),
    ("api_pause_s", "Pause over the socket: PATCH /vm Paused / QMP `stop` (ms)", "{:.2f}", True),
    ("api_resume_s", "Resume over the socket: PATCH /vm Resumed / QMP `cont` (ms)", "{:.2f}", True),
]
MS_KEYS = ("ctl_start_s", "qmp_cont_start_s", "ctl_pause_s", "ctl_resume_s",
           "api_pause_s", "api_resume_s")


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def n_note(rec):
    ns = {who: len(s) for who, s in rec["samples"].items()}
    return ", ".join(f"{LABEL.get(w, w)} {n}" for w, n in ns.items())


def render_markdown(res):
    env, cfg, secs = res["environment"], res["config"], res["sections"]
    vm = cfg["vmms"]
    both = vm == ["cabin", "qemu"]
    L = ["## I/O and lifecycle benchmark: cabin vs QEMU `-M microvm`", ""]
    if env["kind"] == "nested-sandbox":
        where = ("**nested sandbox**: KVM inside a QEMU TCG machine (`-cpu max`, AMD SVM)"
                 f" (host CPU: {env['host_cpu']}). Nested numbers are not hardware numbers:"
                 " every guest exit and every memory copy is emulated, absolute figures are"
                 " orders of magnitude below hardware and swing with host load; compare the"
                 " cabin/QEMU ratios.")
    else:
        where = f"**{env['kind']}** (host CPU: {env['host_cpu']})."
    L.append(f"Environment: {where} CPU seen by the VMMs: {env['cpu_model']}, {env['cpus']} CPUs;"
             f" kernel {env['kernel_release']}; commit {env['commit'] or '?'}; {env['date_utc']}.")
    L.append("")
    L.append(f"Guest: `{os.path.basename(cfg['kernel'])}` booting the busybox image"
             f" `{os.path.basename(cfg['rootfs'])}` from /dev/vda, 1 vCPU, 256 MiB; one boot per"
             " VMM and round, interleaved. Cells: median (min–max)."
             + (" **Quick run** (`--quick`): one round and small sizes, a check of the"
                " harness, not a result." if cfg["quick"] else ""))

    d = secs.get("disk")
    if d:
        s = d["summary"]
        hosts = [h for h in ("host", "host_direct") if h in s]
        L += ["", "### Disk (virtio-blk)", ""]
        hdr = ["Metric"] + [LABEL[v] for v in vm] + (["cabin/QEMU"] if both else [])
        hlabel = {}
        for h in hosts:
            t = d["host_targets"][h]
            hlabel[h] = f"host: {t['fs']}, {'O_DIRECT' if t['direct'] else 'buffered'}"
        hdr += [hlabel[h] for h in hosts]
        if "cabin" in vm and "host" in hosts:
            hdr.append("cabin/host")
        rows = []
        for k, lbl, fmt in DISK_ROWS:
            r = [lbl] + [cell(s, v, k, fmt) for v in vm]
            if both:
                r.append(ratio(s, "cabin", "qemu", k))
            r += [cell(s, h, k, fmt) for h in hosts]
            if "cabin" in vm and "host" in hosts:
                r.append(ratio(s, "cabin", "host", k))
            rows.append(r)
        L += md_table(hdr, rows)
        t = d["host_targets"]["host"]
        L += ["",
              f"- {cfg['disk_mib']} MiB data disk: a fresh sparse raw file per boot in `{t['dir']}`"
              f" ({t['fs']}), attached as the second disk (`--disk path=F` /"
              " `-drive file=F,format=raw,if=none -device virtio-blk-device`, QEMU's default"
              " cache=writeback); the guest finds it by its size"
              f" ({', '.join(sorted(set(x.get('guest_disk') or '?' for v in vm for x in d['samples'].get(v, []))))})."
              " In the guest: busybox dd with `oflag=direct`/`iflag=direct`, write then read;"
              f" QD1: one dd of {cfg['qd1_reads']} 4 KiB reads; random: {cfg['rand_reads']} dd"
              " processes each reading one 4 KiB block at a random offset, and the same loop"
              " reading /dev/zero, whose time is subtracted for the second random row."
              " Times from busybox `adjtimex` (µs), less the cost of a timestamp.",
              "- Host columns: the same shell script run by the host's busybox on a file in the"
              " same directory as the guests' backing files"
              + ("" if t["direct"] else
                 f" — {t['fs']} refuses O_DIRECT (tmpfs gains it only in Linux 6.6), so it runs"
                 " buffered there: the page cache *is* that storage, and these are the same"
                 " pread/pwrite copies a VMM makes, i.e. the ceiling for the guests")
              + "."
              + (" The backing files live on a RAM filesystem on purpose: it takes the storage"
                 " device out and leaves the VMMs' virtio-blk paths to compare (neither VMM opens"
                 " them with O_DIRECT)." if t["fs"] == "tmpfs" else "")]
        if "host_direct" in hosts:
            t2 = d["host_targets"]["host_direct"]
            L.append(f"- `{hlabel['host_direct']}`: the script with O_DIRECT on a file in"
                     f" `{t2['dir']}` ({t2['fs']}"
                     + (": in the nested sandbox a writable 9p share of a directory on the real"
                        " disk; O_DIRECT there bypasses the sandbox's page cache, each request"
                        " crosses 9p to the outer QEMU, which does buffered I/O on the host"
                        if t2["fs"] == "9p" else "")
                     + "): a reference for the sandbox's own disk path, not used by the guests.")
        L.append(f"- Runs: {n_note(d)}.")

    dd = secs.get("debian")
    if dd:
        sd = dd["summary"]
        L += ["", "### Debian 12 image boot (virtio-blk root)", ""]
        hdr = ["Metric"] + [LABEL[v] for v in vm] + (["cabin/QEMU"] if both else [])
        row = ["Launch → `CABIN-DEBIAN-STATE=` on the console (s)"] + \
            [cell(sd, v, "boot_s", "{:.2f}") for v in vm]
        if both:
            row.append(ratio(sd, "cabin", "qemu", "boot_s"))
        row2 = ["Guest's own uptime at that point (s)"] + \
            [cell(sd, v, "guest_uptime_s", "{:.2f}") for v in vm]
        if both:
            row2.append(ratio(sd, "cabin", "qemu", "guest_uptime_s"))
        L += md_table(hdr, [row, row2])
        states = {v: sorted(set(x["state"] for x in dd["samples"].get(v, []))) for v in vm}
        L += ["", f"- `{os.path.basename(dd['image'])}` (a fresh copy per boot in the scratch"
              " tmpfs), 2 vCPUs, 512 MiB, `quiet`; the image's cabin-boot-marker.service"
              " prints the state once `systemctl is-system-running --wait` returns. States"
              " seen: " + "; ".join(f"{LABEL[v]} {', '.join(states[v]) or '–'}" for v in vm)
              + f". Runs: {n_note(dd)}."]

    n = secs.get("net")
    if n:
        s = n["summary"]
        L += ["", "### Network (virtio-net on a TAP)", ""]
        hdr = ["Metric"] + [LABEL[v] for v in vm] + (["cabin/QEMU"] if both else [])
        rows = []
        for k, lbl, fmt in NET_ROWS:
            r = [lbl] + [cell(s, v, k, fmt) for v in vm]
            if both:
                r.append(ratio(s, "cabin", "qemu", k))
            rows.append(r)
        L += md_table(hdr, rows)
        L += ["",
              f"- Namespace `{n['netns']}` made for the run, TAP `{TAP}` in it"
              f" ({HOST_IP}/{PREFIX}; guest {GUEST_IP}), VMM run with `ip netns exec`; QEMU"
              " `-netdev tap,...,vhost=off -device virtio-net-device`. Both ends busybox.",
              f"- Throughput: {cfg['net_mib']} MiB of zeros, `dd bs=64k | nc` each way, timed in"
              " the guest (`adjtimex`) until its nc returns: after the host side has read"
              " everything and closed. Request/response: "
              f"{cfg['rr']} round trips of a 2-byte line over one TCP connection to a host"
              " `nc -l -e cat` echo, driven by the guest shell's builtin echo/read (no process"
              f" per message). Ping: `ping -c {cfg['ping_count']} -i 0.02` from the guest,"
              " busybox's avg.",
              f"- Runs: {n_note(n)}. Everything was removed afterwards (TAP, namespace)."]

    lc = secs.get("lifecycle")
    if lc:
        s = lc["summary"]
        L += ["", "### Lifecycle", ""]
        hdr = ["Metric"] + [LABEL[v] for v in vm] + (["cabin/QEMU"] if both else [])
        rows = []
        for k, lbl, fmt, comparable in LIFE_ROWS:
            if not any(s.get(v, {}).get(k) for v in vm):
                continue
            r = [lbl] + [cell(s, v, k, fmt) for v in vm]
            if both:
                r.append(ratio(s, "cabin", "qemu", k) if comparable else "–")
            rows.append(r)
        L += md_table(hdr, rows)
        L += ["",
              "- cabin: `cabin run --api-sock S`, PUT /machine-config (1 vCPU, 256 MiB),"
              " /boot-source, /drives/rootfs, then the clock starts just before `cabin ctl"
              " start` (InstanceStart; the ctl process start is included) and stops when the"
              " init's marker reaches the console. QEMU: started with `-S` and a QMP socket,"
              " so its kernel is already loaded when the clock starts at QMP `cont`; cabin"
              " builds the VM at InstanceStart.",
              f"- Pause/resume: {cfg['pause_cycles']} cycles per boot on a running guest (a"
              " shell loop), 0.2 s apart: the time for `cabin ctl pause|resume` to return, and"
              " for a PATCH /vm over the socket (QEMU: QMP `stop`/`cont`) to be answered.",
              f"- Boots: {n_note(lc)}."]

    if res["failures"]:
        L += ["", f"**{len(res['failures'])} failed measurement(s):**"]
        for f in res["failures"]:
            first = f["error"].splitlines()[0] if f["error"] else ""
            L.append(f"- {f['section']} {LABEL.get(f['who'], f['who'])} run #{f['index'] + 1}: {first}")
    if res.get("skipped"):
        L += [""] + [f"- Skipped: {x}" for x in res["skipped"]]
    return "\n".join(L) + "\n"


# --- main -----------------------------------------------------------------------------


def parse_args(argv):
    repo = os.path.dirname(os.path.dirname(HERE))
    p = argparse.ArgumentParser(description="Disk, network and lifecycle benchmark of cabin vs QEMU.")
    p.add_argument("--quick", action="store_true",
                   help="fast check: 1 round everywhere, small sizes")
    p.add_argument("--runs", type=int, default=5, help="rounds for disk, debian, net (default 5)")
    p.add_argument("--lifecycle-runs", type=int, default=10, help="boots for lifecycle (default 10)")
    p.add_argument("--pause-cycles", type=int, default=2,
                   help="pause/resume cycles per lifecycle boot (default 2)")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections (default {','.join(SECTIONS)})")
    p.add_argument("--vmm", default="cabin,qemu", help="VMMs, in interleaving order")
    p.add_argument("--disk-mib", type=int, default=256, help="data disk size and transfer (default 256)")
    p.add_argument("--qd1-reads", type=int, default=4096, help="4 KiB reads in the QD1 dd (default 4096)")
    p.add_argument("--rand-reads", type=int, default=300, help="dd processes in the random-read loop (default 300)")
    p.add_argument("--net-mib", type=int, default=32, help="MiB per TCP transfer (default 32)")
    p.add_argument("--rr", type=int, default=200, help="TCP round trips per run (default 200)")
    p.add_argument("--ping-count", type=int, default=50)
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds one guest run may take (default 900)")
    p.add_argument("--debian-timeout", type=float, default=900.0)
    p.add_argument("--disk-dir", default=None,
                   help="where the guests' data disks and the host-side file go"
                        " (default: the scratch tmpfs directory)")
    p.add_argument("--host-direct-dir", default=None,
                   help="also run the host-side disk script with O_DIRECT on a file here")
    p.add_argument("--cabin", default=os.path.join(repo, "target", "release", "cabin"))
    p.add_argument("--qemu", default=shutil.which("qemu-system-x86_64") or "qemu-system-x86_64")
    p.add_argument("--qemu-machine", default="microvm,acpi=on,rtc=off",
                   help="QEMU -M value (default microvm,acpi=on,rtc=off: the guest kernel finds"
                        " virtio-mmio devices in the ACPI DSDT only, as with cabin)")
    p.add_argument("--kernel", default=os.environ.get("CABIN_VMLINUX"))
    p.add_argument("--rootfs", default=os.environ.get("CABIN_ROOTFS"))
    p.add_argument("--debian-image", default=os.environ.get("CABIN_DEBIAN_ROOTFS"))
    p.add_argument("--no-stage", dest="stage", action="store_false",
                   help="run the VMMs from where they are (not copied to a tmpfs)")
    p.add_argument("--environment", default="direct")
    p.add_argument("--host-cpu", default=None)
    p.add_argument("--commit", default="")
    a = p.parse_args(argv)
    if a.quick:
        a.runs = a.lifecycle_runs = 1
        a.disk_mib, a.qd1_reads, a.rand_reads = 16, 256, 20
        a.net_mib, a.rr, a.ping_count = 4, 50, 10
    a.sections = [s.strip() for s in a.only.split(",") if s.strip()]
    if not a.sections or any(s not in SECTIONS for s in a.sections):
        p.error(f"--only takes some of {','.join(SECTIONS)}, not {a.only!r}")
    a.vmms = [v.strip() for v in a.vmm.split(",") if v.strip()]
    if not a.vmms or any(v not in VMMS for v in a.vmms) or len(set(a.vmms)) != len(a.vmms):
        p.error(f"--vmm takes cabin and/or qemu, not {a.vmm!r}")
    for name in ("runs", "lifecycle_runs", "pause_cycles", "disk_mib", "qd1_reads",
                 "rand_reads", "net_mib", "rr", "ping_count"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.disk_mib == 32:
        p.error("--disk-mib 32 is the root image's size: the guest finds the data disk by size")
    for name, path in (("--kernel ($CABIN_VMLINUX)", a.kernel), ("--rootfs ($CABIN_ROOTFS)", a.rootfs)):
        if not path or not os.path.isfile(path):
            p.error(f"{name}: {path!r} is not a file")
    for d in (a.disk_dir, a.host_direct_dir):
        if d and not os.path.isdir(d):
            p.error(f"{d} is not a directory")
    return a


def main(argv):
    a = parse_args(argv)
    # A signal (the sandbox's timeout, Ctrl-C) unwinds through the cleanups: VMMs
    # killed, namespace and scratch files removed.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    ctx = Context()
    ctx.args = a
    ctx.vmms = a.vmms
    skipped = []
    if "debian" in a.sections and (not a.debian_image or not os.path.isfile(a.debian_image)):
        skipped.append(f"debian: no Debian image ({a.debian_image or 'not set'}): run"
                       " resources/rootfs/debian.sh (make artifacts)")
        a.sections.remove("debian")
    if "net" in a.sections and not os.path.exists("/dev/net/tun"):
        skipped.append("net: no /dev/net/tun")
        a.sections.remove("net")
    bins = {"cabin": shutil.which(a.cabin), "qemu": shutil.which(a.qemu)}
    for v in a.vmms:
        if not bins[v]:
            log(f"error: {v} binary {a.cabin if v == 'cabin' else a.qemu} is missing")
            return 2
    if not os.path.exists(HOST_BUSYBOX):
        log(f"error: {HOST_BUSYBOX} is missing (busybox-static)")
        return 2

    scratch = tempfile.mkdtemp(prefix="iobench-")
    cleanup = [scratch]
    ctx.scratch = scratch
    ctx.env = {v: dict(os.environ) for v in VMMS}
    ctx.bin = dict(bins)
    try:
        ctx.kernel = bb.stage_file(os.path.abspath(a.kernel), os.path.join(scratch, "guest"))
        ctx.rootfs = bb.stage_file(os.path.abspath(a.rootfs), os.path.join(scratch, "guest"))
        if a.stage:
            for v in a.vmms:
                ctx.bin[v], extra = stage_binary(v, bins[v], scratch)
                ctx.env[v].update(extra)
    except (OSError, BenchError) as e:
        shutil.rmtree(scratch, ignore_errors=True)
        log(f"error: cannot stage the inputs in {scratch}: {e}")
        return 2
    ctx.busybox_bin = host_bin_dir(scratch)
    if a.disk_dir:
        ctx.disk_dir = a.disk_dir
    elif fs_type("/dev/shm") == "tmpfs" and os.access("/dev/shm", os.W_OK):
        # RAM on any host, so that the storage device is out of the comparison.
        ctx.disk_dir = tempfile.mkdtemp(prefix="iobench-", dir="/dev/shm")
        cleanup.append(ctx.disk_dir)
    else:
        ctx.disk_dir = os.path.join(scratch, "disks")
        os.makedirs(ctx.disk_dir, exist_ok=True)
    ctx.disk_dir_direct = supports_odirect(ctx.disk_dir)
    if a.host_direct_dir and not supports_odirect(a.host_direct_dir):
        skipped.append(f"host O_DIRECT column: {a.host_direct_dir} refuses O_DIRECT")
        a.host_direct_dir = None
    log(f"staged in {scratch}; sections {','.join(a.sections)}; VMMs {','.join(a.vmms)}")

    failures = []
    consecutive = {}
    given_up = set()

    def measure(section, who, index, fn, rec):
        key = (section, who)
        samples = rec.setdefault("samples", {}).setdefault(who, [])
        if key in given_up:
            return
        t0 = time.monotonic()
        try:
            s = fn()
        except (BenchError, OSError, subprocess.SubprocessError, ValueError) as e:
            log(f"FAILED: {section} {who} #{index + 1}: {e}")
            failures.append({"section": section, "who": who, "index": index, "error": str(e)})
            consecutive[key] = consecutive.get(key, 0) + 1
            if consecutive[key] >= MAX_CONSECUTIVE_FAILURES:
                log(f"{section} {who}: {consecutive[key]} failures in a row, not trying it again")
                given_up.add(key)
            return
        consecutive[key] = 0
        samples.append(s)
        brief = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()
                 if not isinstance(v, (dict, list)) or k.endswith("_s")}
        log(f"{section} {who} #{index + 1} ({time.monotonic() - t0:.0f} s): {json.dumps(brief)}")

    ctx.measure = measure
    sections = {}
    runners = {"disk": section_disk, "debian": section_debian, "net": section_net,
               "lifecycle": section_lifecycle}
    scales = {"lifecycle": {k: 1000.0 for k in MS_KEYS}}
    keys = {
        "disk": [k for k, _, _ in DISK_ROWS],
        "debian": ["boot_s", "guest_uptime_s"],
        "net": [k for k, _, _ in NET_ROWS],
        "lifecycle": [k for k, _, _, _ in LIFE_ROWS],
    }
    try:
        for sec in a.sections:
            log(f"--- {sec} ---")
            rec = {"samples": {}}
            sections[sec] = rec
            try:
                runners[sec](ctx, rec)
            except (BenchError, OSError, subprocess.SubprocessError) as e:
                log(f"FAILED: section {sec}: {e}")
                failures.append({"section": sec, "who": "all", "index": 0, "error": str(e)})
            summarize_section(rec, keys[sec], scales.get(sec))
    finally:
        for d in cleanup:
            shutil.rmtree(d, ignore_errors=True)

    res = {
        "schema": SCHEMA,
        "environment": {
            "kind": a.environment,
            "host_cpu": a.host_cpu or bb.cpu_model(),
            "cpu_model": bb.cpu_model(),
            "cpus": os.cpu_count(),
            "kernel_release": platform.release(),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": a.commit,
            "python": platform.python_version(),
        },
        "config": {
            "vmms": a.vmms, "sections": a.sections, "quick": a.quick, "runs": a.runs,
            "lifecycle_runs": a.lifecycle_runs, "pause_cycles": a.pause_cycles,
            "disk_mib": a.disk_mib, "qd1_reads": a.qd1_reads, "rand_reads": a.rand_reads,
            "net_mib": a.net_mib, "rr": a.rr, "ping_count": a.ping_count,
            "kernel": os.path.abspath(a.kernel), "rootfs": os.path.abspath(a.rootfs),
            "debian_image": a.debian_image, "qemu_machine": a.qemu_machine,
            "staged": a.stage, "cmdline": BASE_CMDLINE,
        },
        "sections": sections,
        "failures": failures,
        "skipped": skipped,
    }
    md = render_markdown(res)
    sys.stderr.flush()
    sys.stdout.write(f"{MD_BEGIN}\n{md}{MD_END}\n")
    sys.stdout.write(f"{JSON_BEGIN}\n{json.dumps(res, indent=1)}\n{JSON_END}\n")
    sys.stdout.flush()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
