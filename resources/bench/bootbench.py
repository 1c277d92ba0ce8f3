#!/usr/bin/env python3
"""Boot-time and memory-overhead benchmark: cabin against QEMU -M microvm.

For each VMM this boots the same guest (project kernel + test initramfs,
1 vCPU, 128 MiB) N times, interleaved (cabin, QEMU, cabin, QEMU, ...), and
("cabin-noacpi" is cabin with --no-acpi: the cost of its ACPI tables)
measures for every boot:

  boot time     from just before the VMM process is spawned to the moment the
                guest init's marker `CABIN-READY` shows up on the VMM's stdout
                (the pipe is read in a poll loop with a deadline);
  memory        at the marker the VMM is stopped (SIGSTOP) and its
                /proc/PID/smaps is read: the Rss of every mapping summed,
                minus the Rss of the guest-memory mapping(s) = "RSS excluding
                guest RAM"; VmHWM from /proc/PID/status is the peak RSS.

then kills the VMM (SIGKILL) and reaps it. It also times `VMM --version`
(process start) several times, interleaved as well.

Progress goes to stderr. The results go to stdout as a Markdown table and a
JSON document (every raw sample), each between marker lines, so a caller that
only sees a console (the nested sandbox) can cut them out:

  ===== BOOTBENCH MARKDOWN BEGIN ===== ... ===== BOOTBENCH MARKDOWN END =====
  ===== BOOTBENCH JSON BEGIN =====     ... ===== BOOTBENCH JSON END =====

Exit status: 0 when every boot and --version run succeeded, 1 when some
failed (the table is still printed, with the failures listed), 2 on bad
arguments or missing inputs.

Python 3 standard library only.
"""

import argparse
import datetime
import itertools
import json
import os
import platform
import re
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

MARKER = b"CABIN-READY"
MD_BEGIN = "===== BOOTBENCH MARKDOWN BEGIN ====="
MD_END = "===== BOOTBENCH MARKDOWN END ====="
JSON_BEGIN = "===== BOOTBENCH JSON BEGIN ====="
JSON_END = "===== BOOTBENCH JSON END ====="
SCHEMA = "cabin-bootbench/1"

# Kernel command lines. QEMU's microvm machine has no i8042, so `reboot=k`
# would hang there; it reboots through the triple-fault path instead.
CABIN_CMDLINE = "console=ttyS0 reboot=k panic=-1 quiet"
QEMU_CMDLINE = "console=ttyS0 reboot=t panic=-1 quiet"

# After this many failed boots in a row a VMM is not tried again.
MAX_CONSECUTIVE_FAILURES = 2
TAIL_BYTES = 3000
KIB_PER_MIB = 1024.0


def log(msg):
    print(f"bootbench: {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A failed measurement; the message says what happened."""


# --- VMM command lines ------------------------------------------------------


def cabin_boot_argv(args, kernel, initrd, extra=()):
    return [
        args.cabin, "run",
        "--kernel", kernel,
        "--initrd", initrd,
        "--cmdline", CABIN_CMDLINE,
        "--vcpus", str(args.vcpus),
        "--memory", str(args.memory),
        *extra,
    ]


def qemu_boot_argv(args, kernel, initrd):
    if args.qemu_accel == "kvm":
        accel = ["-enable-kvm", "-cpu", "host"]
    else:  # debugging the harness on a host without usable KVM
        accel = ["-accel", "tcg", "-cpu", "max"]
    return [
        args.qemu,
        "-M", args.qemu_machine,
        *accel,
        "-m", str(args.memory),
        "-smp", str(args.vcpus),
        "-nodefaults", "-no-user-config", "-nographic",
        "-serial", "stdio",
        "-kernel", kernel,
        "-initrd", initrd,
        "-append", QEMU_CMDLINE,
    ]


# --- staging on a tmpfs ---------------------------------------------------------
#
# Inside the nested sandbox the host's files come over 9p without a page cache:
# every exec re-reads the binary and each shared library (QEMU links ~50), which
# makes `qemu-system-x86_64 --version` take seconds there and has nothing to do
# with the VMM. On a normal host those files sit in the page cache. So, by
# default, each VMM's binary and the libraries `ldd` lists are copied to a tmpfs
# and run from there (LD_LIBRARY_PATH), as are the guest kernel and initramfs.


def stage_file(src, dest_dir):
    os.makedirs(dest_dir, exist_ok=True)
    dest = os.path.join(dest_dir, os.path.basename(src))
    shutil.copy2(src, dest)  # follows symlinks; keeps the mode
    return dest


def shared_libraries(binary):
    """Paths of the shared libraries `ldd` resolves for BINARY (not the loader)."""
    r = subprocess.run(["ldd", binary], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, check=False)
    text = r.stdout.decode("utf-8", errors="replace")
    if r.returncode != 0:
        if "not a dynamic executable" in text + r.stderr.decode("utf-8", "replace"):
            return []
        raise BenchError(f"ldd {binary} failed: {r.stderr.decode('utf-8', 'replace').strip()}")
    libs = []
    for line in text.splitlines():
        m = re.match(r"\s*\S+ => (/\S+) \(0x[0-9a-f]+\)", line)
        if m:
            libs.append(m.group(1))
        elif "=> not found" in line:
            raise BenchError(f"ldd {binary}: {line.strip()}")
    return libs


def stage_vmm(binary, root, firmware=()):
    """Copy BINARY and its libraries under ROOT; return (path, extra environment).

    FIRMWARE files are copied to ROOT/share/qemu, where QEMU looks first
    (relative to its executable) before its built-in data directory.
    """
    staged = stage_file(binary, os.path.join(root, "bin"))
    libdir = os.path.join(root, "lib")
    os.makedirs(libdir, exist_ok=True)
    for lib in shared_libraries(binary):
        stage_file(lib, libdir)
    for fw in firmware:
        if os.path.isfile(fw):
            stage_file(fw, os.path.join(root, "share", "qemu"))
    return staged, {"LD_LIBRARY_PATH": libdir}


def qemu_firmware(qemu):
    """The firmware -M microvm may load, from QEMU's data directory (qboot.rom is
    what microvm loads instead of bios-microvm.bin when ACPI is off)."""
    datadirs = [os.path.join(os.path.dirname(os.path.realpath(qemu)), "..", "share", "qemu"),
                "/usr/share/qemu"]
    names = ("bios-microvm.bin", "qboot.rom", "pvh.bin", "linuxboot_dma.bin", "kvmvapic.bin")
    for d in datadirs:
        found = [os.path.join(d, n) for n in names if os.path.isfile(os.path.join(d, n))]
        if found:
            return found
    return []


def qemu_module_dir(qemu):
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(qemu)))
    for d in (os.path.join(prefix, "lib", "x86_64-linux-gnu", "qemu"),
              os.path.join(prefix, "lib", "qemu"), os.path.join(prefix, "lib64", "qemu")):
        if os.path.isdir(d):
            return d
    return None


# --- /proc readers ----------------------------------------------------------

_SMAPS_HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")


def read_smaps(pid):
    """Every mapping of PID: dict(range, perms, path, size_kb, rss_kb, anon_huge_kb)."""
    maps = []
    cur = None
    with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="replace") as f:
        for line in f:
            if _SMAPS_HEADER.match(line):
                parts = line.rstrip("\n").split(None, 5)
                cur = {
                    "range": parts[0],
                    "perms": parts[1],
                    "path": parts[5].strip() if len(parts) > 5 else "",
                    "size_kb": 0,
                    "rss_kb": 0,
                    "anon_huge_kb": 0,
                }
                maps.append(cur)
                continue
            if cur is None:
                continue
            key, _, rest = line.partition(":")
            if key == "Size":
                cur["size_kb"] = int(rest.split()[0])
            elif key == "Rss":
                cur["rss_kb"] = int(rest.split()[0])
            elif key == "AnonHugePages":
                cur["anon_huge_kb"] = int(rest.split()[0])
    return maps


def read_status_kb(pid, keys=("VmHWM", "VmRSS")):
    out = {}
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in keys:
                out[key] = int(rest.split()[0])
    return out


def _anonymous(m):
    """A mapping guest RAM can live in: anonymous memory, shared or not."""
    p = m["path"]
    return (
        p == ""
        or p.startswith("[anon")
        or p.startswith("/memfd:")
        or p.startswith("/dev/zero")
        or p.startswith("/SYSV")
        or p.endswith("(deleted)")
    )


def guest_ram_mappings(maps, ram_kb):
    """The mapping(s) holding guest RAM, and how they were picked.

    1. "exact": anonymous mappings whose Size is the guest RAM size.
    2. "split": two anonymous mappings whose sizes add up to it (RAM split
       around the 32-bit MMIO hole, for large guests).
    3. "containing": the smallest anonymous mapping larger than the RAM
       (guest RAM merged with a neighbouring mapping); approximate.
    """
    anon = [m for m in maps if _anonymous(m)]
    exact = [m for m in anon if m["size_kb"] == ram_kb]
    if exact:
        return exact, "exact"
    parts = [m for m in anon if 1024 <= m["size_kb"] < ram_kb]
    for a, b in itertools.combinations(parts, 2):
        if a["size_kb"] + b["size_kb"] == ram_kb:
            return [a, b], "split"
    bigger = sorted((m for m in anon if m["size_kb"] > ram_kb), key=lambda m: m["size_kb"])
    if bigger:
        return bigger[:1], "containing"
    return [], "none"


def memory_sample(pid, ram_kb):
    maps = read_smaps(pid)
    if not maps:
        raise BenchError("its /proc/PID/smaps is empty (did it exit at the marker?)")
    status = read_status_kb(pid)
    guest, how = guest_ram_mappings(maps, ram_kb)
    if not guest:
        raise BenchError(f"no mapping of {ram_kb} kB (the guest RAM) in its smaps")
    total = sum(m["rss_kb"] for m in maps)
    guest_rss = sum(m["rss_kb"] for m in guest)
    return {
        "rss_total_kb": total,
        "guest_ram_rss_kb": guest_rss,
        "rss_excl_guest_kb": total - guest_rss,
        "vmhwm_kb": status.get("VmHWM"),
        "vmrss_kb": status.get("VmRSS"),
        "mappings": len(maps),
        "guest_mappings": [
            {k: m[k] for k in ("range", "perms", "path", "size_kb", "rss_kb", "anon_huge_kb")}
            for m in guest
        ],
        "guest_mapping_match": how,
    }


# --- one boot -----------------------------------------------------------------


def _tail_text(data):
    return bytes(data[-TAIL_BYTES:]).decode("utf-8", errors="replace")


def _stderr_tail(f):
    try:
        f.flush()
        f.seek(0)
        return _tail_text(f.read())
    except OSError:
        return ""


def _exit_text(rc):
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def boot_once(argv, env, ram_kb, timeout):
    """Boot once; return a sample dict, or raise BenchError with the details."""
    with tempfile.TemporaryFile(prefix="bootbench-stderr-") as errf:
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,  # kept open (no EOF) and never written
                stdout=subprocess.PIPE,
                stderr=errf,
                bufsize=0,
                close_fds=True,
                env=env,
            )
        except OSError as e:
            raise BenchError(f"cannot start {argv[0]}: {e}") from e
        out = bytearray()
        try:
            fd = proc.stdout.fileno()
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            deadline = t0 + timeout
            scan_from = 0
            t_marker = None
            while t_marker is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(
                        f"no {MARKER.decode()} within {timeout:g} s"
                        + _details(proc, out, errf)
                    )
                if not poller.poll(max(1, int(left * 1000))):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        pass
                    raise BenchError(
                        f"the VMM closed its stdout before {MARKER.decode()}"
                        + _details(proc, out, errf)
                    )
                out += chunk
                if out.find(MARKER, scan_from) >= 0:
                    t_marker = time.monotonic()
                scan_from = max(0, len(out) - len(MARKER) + 1)
            # Freeze the VMM where it is: the guest goes on to reboot, which
            # would end the process before /proc could be read.
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                sample = memory_sample(proc.pid, ram_kb)
            except (OSError, BenchError) as e:
                raise BenchError(
                    f"cannot read its memory at the marker: {e}" + _details(proc, out, errf)
                ) from e
            sample["boot_s"] = t_marker - t0
            return sample
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass


def _details(proc, out, errf):
    return (
        f" ({_exit_text(proc.poll())})"
        + f"\n--- stdout tail ---\n{_tail_text(out)}"
        + f"\n--- stderr tail ---\n{_stderr_tail(errf)}\n---"
    )


def version_once(argv, env, timeout=60):
    t0 = time.monotonic()
    try:
        r = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, timeout=timeout, env=env,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BenchError(f"{' '.join(argv)}: {e}") from e
    t = time.monotonic() - t0
    if r.returncode != 0:
        raise BenchError(
            f"{' '.join(argv)}: {_exit_text(r.returncode)}\n"
            + _tail_text(r.stdout) + _tail_text(r.stderr)
        )
    first = r.stdout.decode("utf-8", errors="replace").strip().splitlines()
    return t, (first[0] if first else "")


# --- statistics and output ----------------------------------------------------


def percentile(sorted_values, q):
    """Nearest-rank percentile (q in 0..100) of an already sorted list."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


def summarize(values):
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


# (key, label, how to get the value from a boot sample, format, unit note)
BOOT_METRICS = [
    ("boot_s", "Boot: launch to `CABIN-READY` (s)", lambda s: s["boot_s"], "{:.3f}"),
    ("rss_excl_guest_mib", "RSS excluding guest RAM (MiB)",
     lambda s: s["rss_excl_guest_kb"] / KIB_PER_MIB, "{:.1f}"),
    ("vmhwm_mib", "Peak RSS, VmHWM, guest RAM included (MiB)",
     lambda s: s["vmhwm_kb"] / KIB_PER_MIB if s["vmhwm_kb"] is not None else None, "{:.1f}"),
    ("guest_ram_rss_mib", "Guest RAM resident at the marker (MiB)",
     lambda s: s["guest_ram_rss_kb"] / KIB_PER_MIB, "{:.1f}"),
]
VERSION_METRIC = ("version_ms", "Process start: `--version` (ms)", "{:.1f}")


def cell(summary, fmt):
    if summary is None:
        return "failed"
    return f"{fmt.format(summary['median'])} ({fmt.format(summary['min'])}–{fmt.format(summary['max'])})"


def ratio_cell(a, b):
    if a is None or b is None or b["median"] == 0:
        return "–"
    return f"{a['median'] / b['median']:.2f}"


def environment(args):
    """Where and when a driver measured: the JSON's "environment" (ARGS: the
    drivers' common --environment, --host-cpu and --commit)."""
    return {
        "kind": args.environment,
        "host_cpu": args.host_cpu or cpu_model(),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "kernel_release": platform.release(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": args.commit,
    }


def environment_line(env):
    """The report's first line: date, commit, host CPU and environment."""
    return (f"{env['date_utc']}, commit {env['commit'] or '?'}; host CPU {env['host_cpu']}; "
            f"environment: **{env['kind']}** ({env['cpus']} CPUs, kernel {env['kernel_release']}).")


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def render_markdown(res):
    env = res["environment"]
    cfg = res["config"]
    names = cfg["vmms"]
    label = {"cabin": "cabin", "cabin-noacpi": "cabin --no-acpi", "qemu": "QEMU microvm"}
    lines = ["## Boot benchmark: cabin vs QEMU `-M microvm`", ""]
    if env["kind"] == "nested-sandbox":
        where = (
            "**nested sandbox**: KVM inside a QEMU TCG machine (`-cpu max`, AMD SVM)"
            f" (host CPU: {env['host_cpu']}). Nested numbers are not hardware numbers:"
            " absolute times there are 10-50x those on hardware KVM and swing with host"
            " load; compare the ratios."
        )
    elif env["kind"] == "direct":
        where = f"**direct hardware KVM** (host CPU: {env['host_cpu']})."
    else:
        where = f"**{env['kind']}** (host CPU: {env['host_cpu']})."
    lines.append(
        f"Environment: {where} CPU seen by the VMMs: {env['cpu_model']}, "
        f"{env['cpus']} CPUs; kernel {env['kernel_release']}; {env['date_utc']}."
    )
    lines.append("")
    lines.append(
        f"Guest: `{os.path.basename(cfg['kernel'])}` + `{os.path.basename(cfg['initrd'])}`, "
        f"{cfg['vcpus']} vCPU, {cfg['memory_mib']} MiB, `quiet`. "
        f"{cfg['runs']} boot{'s' if cfg['runs'] != 1 else ''} per VMM, interleaved"
        + (f", after {cfg['warmup']} untimed warm-up boot{'s' if cfg['warmup'] != 1 else ''} each"
           if cfg["warmup"] else "")
        + f"; `--version` {cfg['version_runs']} times each. "
        "Cells: median (min–max); lower is better."
    )
    lines.append("")
    header = ["Metric"] + [label.get(n, n) for n in names]
    ratios = [(a, b) for a, b in (("cabin", "qemu"), ("cabin", "cabin-noacpi"))
              if a in names and b in names]
    header += [f"{label[a]}/{label[b]}" for a, b in ratios]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    rows = [(k, lbl, fmt) for k, lbl, _, fmt in BOOT_METRICS] + [VERSION_METRIC]
    for key, lbl, fmt in rows:
        sums = [res["summary"][n].get(key) for n in names]
        row = [lbl] + [cell(s, fmt) for s in sums]
        for a, b in ratios:
            row.append(ratio_cell(sums[names.index(a)], sums[names.index(b)]))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for n in names:
        v = res["vmms"][n]
        lines.append(f"- {label.get(n, n)}: `{v['version'] or '?'}`; command: `{shlex.join(v['argv'])}`")
    for n in names:
        for m in sorted({s["guest_mapping_match"] for s in res["vmms"][n]["boots"]}):
            if m != "exact":
                lines.append(
                    f"- {label.get(n, n)}: guest RAM mapping found by `{m}` match"
                    " (see the JSON); its RSS-excluding-guest figure is approximate."
                )
    if cfg["qemu_accel"] != "kvm":
        lines.append(f"- QEMU ran with `{cfg['qemu_accel']}`, not KVM: a test of this script, not a comparison.")
    if cfg["staged"]:
        lines.append(
            "- Staged: each VMM binary with its shared libraries (`ldd`), QEMU's microvm"
            " firmware, the kernel and the initramfs were copied to a tmpfs (`/tmp`) and"
            " run from there, as from a warm page cache (in the sandbox the host's files"
            " come over 9p without one). `--no-stage` turns this off."
        )
    if res["failures"]:
        lines.append("")
        lines.append(f"**{len(res['failures'])} failed measurement(s):**")
        for f in res["failures"]:
            first = f["error"].splitlines()[0] if f["error"] else ""
            lines.append(f"- {label.get(f['vmm'], f['vmm'])} {f['what']} #{f['index']}: {first}")
    return "\n".join(lines) + "\n"


# --- main -----------------------------------------------------------------------


def parse_args(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    p = argparse.ArgumentParser(
        description="Boot time and memory overhead of cabin vs QEMU -M microvm.",
    )
    p.add_argument("--runs", type=int, default=7, help="timed boots per VMM (default 7)")
    p.add_argument("--quick", action="store_true",
                   help="fast check: 1 boot and 3 --version runs per VMM, no warm-up")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed boots per VMM before the timed ones (default 1)")
    p.add_argument("--version-runs", type=int, default=9,
                   help="timed `--version` runs per VMM (default 9)")
    p.add_argument("--timeout", type=float, default=180.0,
                   help="seconds a boot may take to reach the marker (default 180)")
    p.add_argument("--cabin", default=os.path.join(repo, "target", "release", "cabin"))
    p.add_argument("--qemu", default=shutil.which("qemu-system-x86_64") or "qemu-system-x86_64")
    p.add_argument("--qemu-machine", default="microvm",
                   help="QEMU -M value (default microvm, its default devices)")
    p.add_argument("--qemu-accel", choices=("kvm", "tcg"), default="kvm",
                   help="kvm (default) or tcg: only for testing this script without KVM")
    p.add_argument("--vmm", default="cabin,cabin-noacpi,qemu",
                   help="comma-separated VMMs to measure, in interleaving order: cabin, cabin-noacpi"
                        " (cabin --no-acpi), qemu (default all three)")
    p.add_argument("--kernel", default=os.environ.get("CABIN_VMLINUX"),
                   help="guest kernel (default $CABIN_VMLINUX)")
    p.add_argument("--initrd", default=os.environ.get("CABIN_TEST_INITRAMFS"),
                   help="guest initramfs printing CABIN-READY (default $CABIN_TEST_INITRAMFS)")
    p.add_argument("--vcpus", type=int, default=1)
    p.add_argument("--memory", type=int, default=128, help="guest RAM in MiB (default 128)")
    p.add_argument("--no-stage", dest="stage", action="store_false",
                   help="boot the kernel and initramfs from where they are instead of a tmpfs copy")
    p.add_argument("--environment", default="direct",
                   help="where this runs: direct or nested-sandbox (set by boot.sh)")
    p.add_argument("--host-cpu", default=None,
                   help="CPU model of the physical host (set by boot.sh; default: this machine's)")
    p.add_argument("--commit", default="", help="source revision measured (set by boot.sh)")
    a = p.parse_args(argv)
    if a.quick:
        a.runs, a.warmup, a.version_runs = 1, 0, 3
    a.vmms = [v.strip() for v in a.vmm.split(",") if v.strip()]
    bad = [v for v in a.vmms if v not in ("cabin", "cabin-noacpi", "qemu")]
    if bad or not a.vmms or len(set(a.vmms)) != len(a.vmms):
        p.error(f"--vmm takes cabin, cabin-noacpi and/or qemu, not {a.vmm!r}")
    if a.runs < 1 or a.warmup < 0 or a.version_runs < 0:
        p.error("--runs must be at least 1, --warmup and --version-runs at least 0")
    for name, path in (("--kernel ($CABIN_VMLINUX)", a.kernel),
                       ("--initrd ($CABIN_TEST_INITRAMFS)", a.initrd)):
        if not path:
            p.error(f"{name} is not set")
        if not os.path.isfile(path):
            p.error(f"{name}: {path} is not a file")
    return a


def main(argv):
    args = parse_args(argv)
    ram_kb = args.memory * 1024
    for n in args.vmms:
        binary = args.qemu if n == "qemu" else args.cabin
        if shutil.which(binary) is None:
            log(f"error: {n} binary {binary} is missing or not executable")
            return 2

    stage_dir = None
    kernel, initrd = os.path.abspath(args.kernel), os.path.abspath(args.initrd)
    binaries = {"cabin": shutil.which(args.cabin), "cabin-noacpi": shutil.which(args.cabin),
                "qemu": shutil.which(args.qemu)}
    envs = {n: dict(os.environ) for n in binaries}
    staged_env = {n: {} for n in binaries}
    kernel_run, initrd_run = kernel, initrd
    if args.stage:
        stage_dir = tempfile.mkdtemp(prefix="bootbench-")
        try:
            kernel_run = stage_file(kernel, os.path.join(stage_dir, "guest"))
            initrd_run = stage_file(initrd, os.path.join(stage_dir, "guest"))
            for n in args.vmms:
                fw = qemu_firmware(binaries[n]) if n == "qemu" else ()
                original = binaries[n]
                binaries[n], staged_env[n] = stage_vmm(
                    original, os.path.join(stage_dir, n), fw)
                if n == "qemu":
                    # QEMU looks for its loadable modules (e.g. TCG) relative to
                    # its executable; point it back at the installed ones.
                    moddir = qemu_module_dir(original)
                    if moddir:
                        staged_env[n]["QEMU_MODULE_DIR"] = moddir
                envs[n].update(staged_env[n])
        except (OSError, BenchError) as e:
            shutil.rmtree(stage_dir, ignore_errors=True)
            log(f"error: cannot stage the inputs on {stage_dir} (try --no-stage): {e}")
            return 2
        log(f"staged the VMMs and the guest in {stage_dir}")
    args.qemu = binaries["qemu"]
    boot_argv = {}
    for n in ("cabin", "cabin-noacpi"):
        args.cabin = binaries[n]
        boot_argv[n] = cabin_boot_argv(args, kernel_run, initrd_run,
                                       ["--no-acpi"] if n == "cabin-noacpi" else [])
    boot_argv["qemu"] = qemu_boot_argv(args, kernel_run, initrd_run)
    version_argv = {n: [binaries[n], "--version"] for n in binaries}
    vmms = {
        n: {"argv": boot_argv[n], "env": staged_env[n], "version_argv": version_argv[n],
            "version": None, "boots": [], "warmup_boots": [], "version_s": []}
        for n in args.vmms
    }
    failures = []
    consecutive = {n: 0 for n in args.vmms}
    given_up = set()

    def fail(n, what, index, err):
        log(f"FAILED: {n} {what} #{index}: {err}")
        failures.append({"vmm": n, "what": what, "index": index, "error": str(err)})

    try:
        # Process start first: short, and it also warms the binaries' page cache.
        log(f"timing --version ({args.version_runs} runs each, after an untimed one)")
        for i in range(args.version_runs + 1):
            for n in args.vmms:
                try:
                    t, first = version_once(version_argv[n], envs[n])
                except BenchError as e:
                    fail(n, "--version", i, e)
                    continue
                vmms[n]["version"] = first
                if i > 0:  # the first run is untimed (cold caches)
                    vmms[n]["version_s"].append(t)
        total = args.warmup + args.runs
        log(f"booting: {args.warmup} warm-up + {args.runs} timed boots each, "
            f"interleaved {'/'.join(args.vmms)}")
        for i in range(total):
            warm = i < args.warmup
            for n in args.vmms:
                if n in given_up:
                    continue
                what = "warm-up boot" if warm else "boot"
                index = i + 1 if warm else i - args.warmup + 1
                try:
                    s = boot_once(boot_argv[n], envs[n], ram_kb, args.timeout)
                except BenchError as e:
                    fail(n, what, index, e)
                    consecutive[n] += 1
                    if consecutive[n] >= MAX_CONSECUTIVE_FAILURES:
                        log(f"{n}: {consecutive[n]} failures in a row, not trying it again")
                        given_up.add(n)
                    continue
                consecutive[n] = 0
                (vmms[n]["warmup_boots"] if warm else vmms[n]["boots"]).append(s)
                log(
                    f"{n} {what} {index}/{args.warmup if warm else args.runs}: "
                    f"{s['boot_s']:.3f} s, RSS excl. guest {s['rss_excl_guest_kb'] / KIB_PER_MIB:.1f} MiB, "
                    f"VmHWM {(s['vmhwm_kb'] or 0) / KIB_PER_MIB:.1f} MiB"
                )
    finally:
        if stage_dir:
            shutil.rmtree(stage_dir, ignore_errors=True)

    summary = {}
    for n in args.vmms:
        boots = vmms[n]["boots"]
        summary[n] = {}
        for key, _, get, _ in BOOT_METRICS:
            vals = [v for v in (get(s) for s in boots) if v is not None]
            summary[n][key] = summarize(vals)
        summary[n]["version_ms"] = summarize([t * 1000.0 for t in vmms[n]["version_s"]])

    res = {
        "schema": SCHEMA,
        "environment": {
            "kind": args.environment,
            "host_cpu": args.host_cpu or cpu_model(),
            "cpu_model": cpu_model(),
            "cpus": os.cpu_count(),
            "kernel_release": platform.release(),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": args.commit,
            "python": platform.python_version(),
        },
        "config": {
            "vmms": args.vmms,
            "runs": args.runs,
            "warmup": args.warmup,
            "version_runs": args.version_runs,
            "timeout_s": args.timeout,
            "kernel": kernel,
            "initrd": initrd,
            "staged": bool(stage_dir),
            "vcpus": args.vcpus,
            "qemu_accel": args.qemu_accel,
            "qemu_machine": args.qemu_machine,
            "memory_mib": args.memory,
            "marker": MARKER.decode(),
            "cmdline": {"cabin": CABIN_CMDLINE, "cabin-noacpi": CABIN_CMDLINE,
                        "qemu": QEMU_CMDLINE},
        },
        "vmms": vmms,
        "summary": summary,
        "failures": failures,
    }
    md = render_markdown(res)
    sys.stderr.flush()
    out = sys.stdout
    out.write(f"{MD_BEGIN}\n{md}{MD_END}\n")
    out.write(f"{JSON_BEGIN}\n{json.dumps(res, indent=1)}\n{JSON_END}\n")
    out.flush()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
