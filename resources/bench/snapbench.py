#!/usr/bin/env python3
"""Snapshot benchmark: cabin's snapshot create, restore and clones.

Run by resources/bench/snapshot.sh, directly where cabin's `check` says guests
boot natively, else inside the nested sandbox.

The guest: the project kernel and the busybox ext4 image as /dev/vda
(read-only, shared by every instance), 1 vCPU, running through the image's init
(`cabin.sh=<base64>` on the command line, see resources/rootfs/init):

  echo GUEST-UP; while :; do echo TICK; usleep 2000; done

so a restored guest's first `TICK` line after its launch is "the guest answering".

Measured in one run, interleaved per round (the starts' order rotates from one
round to the next, so that none always follows the same one):
  create    boot the guest with --api-sock (`cabin ctl start`), wait for
            GUEST-UP and a few TICK lines, time `cabin ctl snapshot DIR` (wall
            clock) at --memory and at --big MiB; the state file's size, the
            memory file's apparent and allocated (st_blocks * 512) size, and
            cabin's own figure from its info log ("Full snapshot in N ms").
  diff      a guest booted with track_dirty_pages (PUT /machine-config): full
            snapshot, resume, ~1 s of running, `cabin ctl snapshot DIR --diff`:
            the time and the diff memory file's allocated size.
  start     launch (from just before the process is spawned, monotonic clock)
            to: the first TICK line of `cabin run --restore DIR` (the snapshots
            of the first round, at both sizes, kept on a tmpfs); GUEST-UP of a
            cold boot of the same guest; the output of a crun container running
            `echo GUEST-UP` (containers.py's bundle: the same image's tree,
            read-only, 1 CPU, --memory limit); and, when --firecracker is given,
            Firecracker's restore of its own snapshot of the same guest
            (PUT /snapshot/load with resume_vm) to the first TICK line.
  clones    --clones `cabin run --restore DIR` of the --memory snapshot at once
            (no network); once each printed a TICK line: the time the last one
            took, the PSS of each (/proc/PID/smaps_rollup) summed and averaged,
            and the Size, Rss, Pss and Anonymous of the guest-memory mapping (the
            memory file, mapped privately): Pss well below Rss means the clones
            share the file's pages.

Snapshots, sockets and the staged binaries live in a tmpdir (a tmpfs in the
sandbox: a memory file that is mapped must not be on 9p).

Output: Markdown and JSON between marker lines on stdout (snapshot.sh cuts
them out):
  ===== SNAPBENCH MARKDOWN BEGIN ===== ... ===== SNAPBENCH MARKDOWN END =====
  ===== SNAPBENCH JSON BEGIN =====     ... ===== SNAPBENCH JSON END =====

Exit status: 0 every measurement succeeded, 1 some failed (the tables are still
printed, with the failures listed), 2 bad arguments or missing inputs.

Python 3 standard library only; the console, staging and crun helpers are
iobench.py's, bootbench.py's and containers.py's, imported.
"""

import argparse
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # the repository (read-only in the sandbox) stays clean
sys.path.insert(0, HERE)
import bootbench as bb  # noqa: E402
import containers as cb  # noqa: E402
import iobench as ib  # noqa: E402

MD_BEGIN = "===== SNAPBENCH MARKDOWN BEGIN ====="
MD_END = "===== SNAPBENCH MARKDOWN END ====="
JSON_BEGIN = "===== SNAPBENCH JSON BEGIN ====="
JSON_END = "===== SNAPBENCH JSON END ====="
SCHEMA = "cabin-snapbench/1"

UP = b"GUEST-UP"
TICK = b"TICK"
GUEST_SCRIPT = "echo GUEST-UP\nwhile :; do echo TICK; usleep 2000; done\n"
CMDLINE = cb.CMDLINE["cabin"]
TICKS_BEFORE_SNAPSHOT = 5
DIFF_RUN_S = 1.0
RESTORED_LOG = re.compile(r"restored \S+ in (\d+) ms")
SNAPSHOT_LOG = re.compile(r"(Full|Diff) snapshot in (\d+) ms")
MIB = float(1 << 20)
# After this many failures in a row a kind of measurement is not tried again.
MAX_CONSECUTIVE_FAILURES = 2


def log(msg):
    print(f"snapbench: {msg}", file=sys.stderr, flush=True)


BenchError = bb.BenchError


class Context:
    pass


# --- helpers ----------------------------------------------------------------------------


def guest_cmdline():
    return f"{CMDLINE} cabin.sh={base64.b64encode(GUEST_SCRIPT.encode()).decode()}"


def stats(values):
    """Median, p90 (nearest rank), min, max and n; None without values."""
    if not values:
        return None
    s = bb.summarize(values)
    s["p90"] = bb.percentile(sorted(values), 90)
    return s


def stderr_text(vm):
    vm.errf.flush()
    vm.errf.seek(0)
    return vm.errf.read().decode("utf-8", "replace")


def logged_ms(vm, pattern):
    m = pattern.search(stderr_text(vm))
    return float(m.group(m.lastindex)) if m else None


def run_timed(argv, env, what, timeout):
    """Wall-clock seconds of ARGV; BenchError unless it exits 0."""
    t0 = time.monotonic()
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{what}: not done within {timeout:g} s") from e
    dt = time.monotonic() - t0
    if r.returncode != 0:
        raise BenchError(f"{what}: exit status {r.returncode}: "
                         f"{r.stderr.decode('utf-8', 'replace').strip()}")
    return dt


def file_sizes(d):
    state = os.stat(os.path.join(d, "state"))
    mem = os.stat(os.path.join(d, "memory"))
    return {"state_bytes": state.st_size, "memory_apparent_bytes": mem.st_size,
            "memory_allocated_bytes": mem.st_blocks * 512}


def wait_ticks(vm, count, deadline, start=0):
    """Wait for COUNT marker lines after offset START; the first one's time."""
    first = None
    for _ in range(count):
        t, start = vm.console.wait_for(TICK, deadline, start)
        first = first or t
    return first


def checked(vm, fn):
    try:
        return fn()
    except BenchError as e:
        raise BenchError(f"{e}{vm.details()}") from e


# --- cabin ---------------------------------------------------------------------------------


def cabin_vm(ctx, memory, sock):
    """A cabin serving the API on SOCK, pre-filled with the guest, not started."""
    argv = ib.cabin_argv(ctx, [ctx.rootfs], guest_cmdline(), memory, 1, root_readonly=True)
    vm = ib.Vm(argv + ["--api-sock", sock], ctx.env["cabin"])
    ib.wait_path(sock, vm)
    return vm


def ctl(ctx, sock, *action):
    return run_timed([ctx.bin["cabin"], "ctl", "--api-sock", sock, *action], ctx.env["cabin"],
                     f"cabin ctl {' '.join(action)}", ctx.args.timeout)


def start_guest(ctx, vm, sock):
    deadline = time.monotonic() + ctx.args.timeout
    ctl(ctx, sock, "start")
    _, end = vm.console.wait_for(UP, deadline)
    wait_ticks(vm, TICKS_BEFORE_SNAPSHOT, deadline, end)


def create_once(ctx, memory, keep):
    """Boot, snapshot; the sample, and the directory if KEEP (else removed)."""
    sock = os.path.join(ctx.scratch, "create.sock")
    d = tempfile.mkdtemp(prefix=f"snap-{memory}-", dir=ctx.snapdir)
    try:
        with cabin_vm(ctx, memory, sock) as vm:
            def body():
                start_guest(ctx, vm, sock)
                s = {"memory_mib": memory, "create_s": ctl(ctx, sock, "snapshot", d)}
                s["vmm_ms"] = logged_ms(vm, SNAPSHOT_LOG)
                s.update(file_sizes(d))
                return s
            sample = checked(vm, body)
    finally:
        if os.path.exists(sock):
            os.unlink(sock)
        if not keep:
            shutil.rmtree(d, ignore_errors=True)
    return sample, (d if keep else None)


def diff_once(ctx, memory):
    sock = os.path.join(ctx.scratch, "diff.sock")
    full = tempfile.mkdtemp(prefix="full-", dir=ctx.snapdir)
    diff = tempfile.mkdtemp(prefix="diff-", dir=ctx.snapdir)
    try:
        with cabin_vm(ctx, memory, sock) as vm:
            def body():
                ib.api_ok(sock, "PUT", "/machine-config",
                          {"vcpu_count": 1, "mem_size_mib": memory, "track_dirty_pages": True})
                start_guest(ctx, vm, sock)
                s = {"memory_mib": memory, "full_tracked_s": ctl(ctx, sock, "snapshot", full)}
                ctl(ctx, sock, "resume")
                time.sleep(DIFF_RUN_S)  # the guest runs (prints markers) before the diff
                s["diff_s"] = ctl(ctx, sock, "snapshot", diff, "--diff")
                s["diff_allocated_bytes"] = file_sizes(diff)["memory_allocated_bytes"]
                s["full_allocated_bytes"] = file_sizes(full)["memory_allocated_bytes"]
                return s
            return checked(vm, body)
    finally:
        if os.path.exists(sock):
            os.unlink(sock)
        shutil.rmtree(full, ignore_errors=True)
        shutil.rmtree(diff, ignore_errors=True)


def restore_argv(ctx, snapdir):
    return [ctx.bin["cabin"], "run", "--restore", snapdir]


def restore_once(ctx, snapdir):
    with ib.Vm(restore_argv(ctx, snapdir), ctx.env["cabin"]) as vm:
        t = checked(vm, lambda: wait_ticks(vm, 1, vm.t_spawn + ctx.args.restore_timeout))
        return {"start_ms": (t - vm.t_spawn) * 1000.0, "vmm_ms": logged_ms(vm, RESTORED_LOG)}


def cold_once(ctx, memory):
    argv = ib.cabin_argv(ctx, [ctx.rootfs], guest_cmdline(), memory, 1, root_readonly=True)
    with ib.Vm(argv, ctx.env["cabin"]) as vm:
        t, _ = checked(vm, lambda: vm.console.wait_for(UP, vm.t_spawn + ctx.args.timeout))
        return {"start_ms": (t - vm.t_spawn) * 1000.0}


# --- crun ------------------------------------------------------------------------------------


def setup_crun(ctx):
    """containers.py's bundle pieces; a reason string when crun cannot be used."""
    path = shutil.which(ctx.args.crun)
    if not path:
        return f"crun ({ctx.args.crun}) is not installed"
    try:
        ctx.bin["crun"], extra = ib.stage_binary("crun", path, ctx.scratch)
        ctx.env["crun"] = dict(os.environ, **extra)
        ctx.crun_rootfs = os.path.join(ctx.scratch, "bundle-rootfs")
        cb.extract_rootfs(ctx.rootfs, ctx.crun_rootfs)
        ctx.crun_root = os.path.join(ctx.scratch, "crun-state")
        os.makedirs(ctx.crun_root)
        ctx.crun_spec = cb.crun_spec(ctx.bin["crun"], ctx.env["crun"], ctx.scratch)
    except (OSError, BenchError, subprocess.SubprocessError) as e:
        return f"crun could not be set up: {e}"
    ctx.bundles = ctx.containers = 0
    return None


def crun_once(ctx):
    vm = cb.crun_launch(ctx, "echo GUEST-UP", ctx.args.memory)
    try:
        t, _ = checked(vm, lambda: vm.console.wait_for(UP, vm.t_spawn + ctx.args.timeout))
        return {"start_ms": (t - vm.t_spawn) * 1000.0}
    finally:
        cb.stop(ctx, vm)
        shutil.rmtree(vm.bundle, ignore_errors=True)


# --- Firecracker (optional) -------------------------------------------------------------------


def fc_vm(ctx, sock):
    vm = ib.Vm([ctx.bin["firecracker"], "--api-sock", sock], ctx.env["firecracker"])
    ib.wait_path(sock, vm)
    return vm


def fc_snapshot(ctx, memory):
    """Firecracker boots the same guest and writes its own snapshot; its directory."""
    sock = os.path.join(ctx.scratch, "fc-create.sock")
    d = tempfile.mkdtemp(prefix="fc-", dir=ctx.snapdir)
    try:
        with fc_vm(ctx, sock) as vm:
            def body():
                ib.api_ok(sock, "PUT", "/boot-source", {"kernel_image_path": ctx.kernel,
                                                        "boot_args": guest_cmdline()})
                ib.api_ok(sock, "PUT", "/drives/rootfs", {
                    "drive_id": "rootfs", "path_on_host": ctx.rootfs,
                    "is_root_device": True, "is_read_only": True})
                ib.api_ok(sock, "PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": memory})
                deadline = time.monotonic() + ctx.args.timeout
                ib.api_ok(sock, "PUT", "/actions", {"action_type": "InstanceStart"})
                _, end = vm.console.wait_for(UP, deadline)
                wait_ticks(vm, TICKS_BEFORE_SNAPSHOT, deadline, end)
                ib.api_ok(sock, "PATCH", "/vm", {"state": "Paused"})
                ib.api_ok(sock, "PUT", "/snapshot/create", {
                    "snapshot_type": "Full", "snapshot_path": os.path.join(d, "state"),
                    "mem_file_path": os.path.join(d, "memory")})
            checked(vm, body)
        return d
    finally:
        if os.path.exists(sock):
            os.unlink(sock)


def fc_restore_once(ctx, snapdir):
    sock = os.path.join(ctx.scratch, "fc-restore.sock")
    try:
        t_spawn = time.monotonic()
        with fc_vm(ctx, sock) as vm:
            def body():
                ib.api_ok(sock, "PUT", "/snapshot/load", {
                    "snapshot_path": os.path.join(snapdir, "state"),
                    "mem_backend": {"backend_type": "File",
                                    "backend_path": os.path.join(snapdir, "memory")},
                    "resume_vm": True})
                return wait_ticks(vm, 1, t_spawn + ctx.args.restore_timeout)
            t = checked(vm, body)
            return {"start_ms": (t - t_spawn) * 1000.0}
    finally:
        if os.path.exists(sock):
            os.unlink(sock)


# --- clones ------------------------------------------------------------------------------------


def mapping_of(pid, path):
    """Size, Rss, Pss and Anonymous (kB) of PID's mappings of the file PATH, summed."""
    out = {"size_kb": 0, "rss_kb": 0, "pss_kb": 0, "anon_kb": 0}
    keys = {"Size": "size_kb", "Rss": "rss_kb", "Pss": "pss_kb", "Anonymous": "anon_kb"}
    inside = False
    with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="replace") as f:
        for line in f:
            if bb._SMAPS_HEADER.match(line):
                parts = line.split(None, 5)
                inside = len(parts) > 5 and parts[5].strip() == path
                continue
            key, _, rest = line.partition(":")
            if inside and key in keys:
                out[keys[key]] += int(rest.split()[0])
    return out


def clones(ctx, snapdir, count):
    memfile = os.path.realpath(os.path.join(snapdir, "memory"))
    vms = []
    try:
        t0 = time.monotonic()
        for _ in range(count):
            vms.append(ib.Vm(restore_argv(ctx, snapdir), ctx.env["cabin"]))
        last = t0
        for vm in vms:
            last = max(last, checked(vm, lambda vm=vm: wait_ticks(
                vm, 1, t0 + ctx.args.restore_timeout)))
        each = []
        for vm in vms:
            m = mapping_of(vm.proc.pid, memfile)
            if not m["size_kb"]:
                raise BenchError(f"no mapping of {memfile} in the smaps of clone {vm.proc.pid}")
            m["pss_total_kb"] = cb.pss_kb(vm.proc.pid)
            each.append(m)
        n = len(each)
        return {
            "clones": n,
            "all_answering_s": last - t0,
            "pss_sum_mib": sum(m["pss_total_kb"] for m in each) / 1024.0,
            "pss_mean_mib": sum(m["pss_total_kb"] for m in each) / 1024.0 / n,
            "guest_size_mib": each[0]["size_kb"] / 1024.0,
            "guest_rss_mean_mib": sum(m["rss_kb"] for m in each) / 1024.0 / n,
            "guest_pss_mean_mib": sum(m["pss_kb"] for m in each) / 1024.0 / n,
            "guest_anon_mean_mib": sum(m["anon_kb"] for m in each) / 1024.0 / n,
            "each": each,
        }
    finally:
        for vm in vms:
            vm.stop()


def keep_failed(snapdir, dest):
    """Copy a snapshot that did not restore (sparse) for a closer look; a note."""
    shutil.rmtree(dest, ignore_errors=True)
    r = subprocess.run(["cp", "-r", "--sparse=always", snapdir, dest], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if r.returncode != 0:
        return f"a snapshot that failed to restore could not be kept: {r.stdout.decode().strip()}"
    return (f"a snapshot that failed to restore was kept in {dest} (its disk was the staged "
            "copy of the image, at the path in its state file)")


# --- output ------------------------------------------------------------------------------------


def fmt_cell(s, fmt):
    if s is None:
        return "–", "–", "–", "0"
    return (fmt.format(s["median"]), fmt.format(s["p90"]),
            f"{fmt.format(s['min'])}–{fmt.format(s['max'])}", str(s["n"]))


def ratio(a, b):
    if not a or not b or not b["median"]:
        return "–"
    return f"{a['median'] / b['median']:.2f}"


def render_markdown(res):
    env, cfg, sm = res["environment"], res["config"], res["summary"]
    small, big = cfg["memory"], cfg["big"]
    lines = [
        "## Snapshots: create, restore, clones",
        "",
        bb.environment_line(env),
    ]
    if env["kind"] != "direct":
        lines.append("Measured inside the nested sandbox (QEMU TCG with nested KVM): **these are "
                     "not hardware numbers**; absolute times there are 10-50x hardware and swing "
                     "with host load: compare the rows of one run with each other.")
    lines += [
        "",
        f"Guest: project kernel + busybox image (read-only), 1 vCPU; it prints `GUEST-UP`, then "
        f"`TICK` every ~2 ms. {cfg['runs']} round(s), interleaved"
        + (f", after {cfg['warmup']} untimed warm-up round(s)" if cfg["warmup"] else "")
        + "; snapshots and memory files on a tmpfs. Cells: median, p90, min–max, n.",
        "",
        "### Start: launch to the guest answering (ms)",
        "",
        "| Start | median | p90 | min–max | n |",
        "|---|---|---|---|---|",
    ]
    starts = [
        ("restore_small", f"cabin `run --restore`, {small} MiB: launch to first `TICK`"),
        ("restore_big", f"cabin `run --restore`, {big} MiB: launch to first `TICK`"),
        ("restore_small_vmm", f"cabin's own log, {small} MiB: \"restored ... in N ms\""),
        ("restore_big_vmm", f"cabin's own log, {big} MiB: \"restored ... in N ms\""),
        ("cold", f"cabin cold boot, {small} MiB: launch to `GUEST-UP`"),
        ("crun", "crun container `echo GUEST-UP`: launch to output"),
        ("firecracker", f"Firecracker snapshot load (resume_vm), {small} MiB: launch to first `TICK`"),
    ]
    for key, label in starts:
        lines.append(f"| {label} | " + " | ".join(fmt_cell(sm.get(key), "{:.0f}")) + " |")
    lines += ["", "| Ratio (medians) | value |", "|---|---|",
              f"| restore / cold boot ({small} MiB) | {ratio(sm.get('restore_small'), sm.get('cold'))} |",
              f"| restore / crun start | {ratio(sm.get('restore_small'), sm.get('crun'))} |",
              f"| restore {big} MiB / restore {small} MiB (flat: ≈1) | "
              f"{ratio(sm.get('restore_big'), sm.get('restore_small'))} |",
              f"| Firecracker restore / cabin restore ({small} MiB) | "
              f"{ratio(sm.get('firecracker'), sm.get('restore_small'))} |"]
    notes = res["notes"]
    lines += ["", "### Create", "", "| Snapshot | median | p90 | min–max | n |",
              "|---|---|---|---|---|"]
    creates = []
    for tag, mib in (("small", small), ("big", big)):
        creates += [
            (f"create_{tag}_ms", f"Full, {mib} MiB: `cabin ctl snapshot` wall clock (ms)", "{:.0f}"),
            (f"create_{tag}_vmm_ms", f"Full, {mib} MiB: cabin's own log (ms)", "{:.0f}"),
            (f"state_{tag}_kib", f"Full, {mib} MiB: state file (KiB)", "{:.1f}"),
            (f"mem_apparent_{tag}_mib", f"Full, {mib} MiB: memory file, apparent size (MiB)", "{:.0f}"),
            (f"mem_allocated_{tag}_mib", f"Full, {mib} MiB: memory file, allocated (MiB)", "{:.1f}"),
        ]
    creates += [
        ("full_tracked_ms", f"Full with dirty-page tracking, {small} MiB (ms)", "{:.0f}"),
        ("diff_ms", f"Diff after ~{DIFF_RUN_S:g} s of running, {small} MiB (ms)", "{:.0f}"),
        ("diff_allocated_mib", "Diff: memory file, allocated (MiB)", "{:.2f}"),
    ]
    for key, label, fmt in creates:
        lines.append(f"| {label} | " + " | ".join(fmt_cell(sm.get(key), fmt)) + " |")
    c = res["clones"]
    lines += ["", f"### Clones: {cfg['clones']} restores of one {small} MiB snapshot at once", ""]
    if c:
        lines += [
            "| Clones | value |", "|---|---|",
            f"| clones answering | {c['clones']} |",
            f"| launch of all to the last one's first `TICK` (s) | {c['all_answering_s']:.2f} |",
            f"| PSS, sum over the clones (MiB) | {c['pss_sum_mib']:.1f} |",
            f"| PSS per clone, mean (MiB) | {c['pss_mean_mib']:.1f} |",
            f"| guest-memory mapping (the memory file, MAP_PRIVATE): size (MiB) | "
            f"{c['guest_size_mib']:.0f} |",
            f"| guest-memory mapping: Rss per clone, mean (MiB) | {c['guest_rss_mean_mib']:.1f} |",
            f"| guest-memory mapping: Pss per clone, mean (MiB) | {c['guest_pss_mean_mib']:.1f} |",
            f"| guest-memory mapping: private (copied-on-write) per clone, mean (MiB) | "
            f"{c['guest_anon_mean_mib']:.1f} |",
        ]
    else:
        lines.append("Not measured (see the failures).")
    lines += ["", "Notes:"]
    lines += [f"- {n}" for n in notes]
    lines.append(f"- Restore command: `{' '.join(res['argv']['restore'])}` (the cold boot's "
                 "command line and the guest script are in the JSON).")
    if res["failures"]:
        lines += ["", f"**{len(res['failures'])} failed measurement(s):**"]
        for f in res["failures"]:
            first = f["error"].splitlines()[0] if f["error"] else ""
            lines.append(f"- {f['what']}: {first}")
    return "\n".join(lines) + "\n"


# --- main -------------------------------------------------------------------------------------


def parse_args(argv):
    repo = os.path.dirname(os.path.dirname(HERE))
    p = argparse.ArgumentParser(description="cabin snapshots: create, restore, clones.")
    p.add_argument("--quick", action="store_true",
                   help="2 rounds, no warm-up, --big 512, 3 clones")
    p.add_argument("--runs", type=int, default=7, help="interleaved rounds of starts (default 7)")
    p.add_argument("--create-runs", type=int, default=3,
                   help="rounds that also time snapshot creation (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--memory", type=int, default=128, help="guest MiB (default 128)")
    p.add_argument("--big", type=int, default=2048, help="the larger guest's MiB (default 2048)")
    p.add_argument("--clones", type=int, default=10, help="restores at once (default 10)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds one step may take")
    p.add_argument("--restore-timeout", type=float, default=60.0,
                   help="seconds a restored guest may take to answer (default 60)")
    p.add_argument("--keep-failed", default=None, metavar="DIR",
                   help="copy a snapshot whose restore failed to DIR/TAG (set by snapshot.sh)")
    p.add_argument("--cabin", default=os.path.join(repo, "target", "release", "cabin"))
    p.add_argument("--crun", default="crun")
    p.add_argument("--firecracker", default=os.environ.get("FIRECRACKER") or None,
                   help="a Firecracker binary to compare restores with (default $FIRECRACKER)")
    p.add_argument("--kernel", default=os.environ.get("CABIN_VMLINUX"))
    p.add_argument("--rootfs", default=os.environ.get("CABIN_ROOTFS"))
    p.add_argument("--environment", default="direct")
    p.add_argument("--host-cpu", default=None)
    p.add_argument("--commit", default="")
    a = p.parse_args(argv)
    if a.quick:
        a.runs, a.create_runs, a.warmup, a.big, a.clones = 2, 1, 0, 512, 3
    for name in ("runs", "create_runs", "memory", "big", "clones"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.warmup < 0:
        p.error("--warmup must be at least 0")
    a.create_runs = min(a.create_runs, a.runs)
    for name, path in (("--kernel ($CABIN_VMLINUX)", a.kernel), ("--rootfs ($CABIN_ROOTFS)", a.rootfs)):
        if not path or not os.path.isfile(path):
            p.error(f"{name}: {path!r} is not a file")
    if a.firecracker and not shutil.which(a.firecracker):
        p.error(f"--firecracker ($FIRECRACKER): {a.firecracker!r} is not an executable")
    return a


def setup(ctx):
    a = ctx.args
    cabin = shutil.which(a.cabin)
    if not cabin:
        raise BenchError(f"cabin ({a.cabin}) is missing: cargo build --release")
    ctx.bin, ctx.env = {}, {}
    ctx.bin["cabin"], extra = ib.stage_binary("cabin", cabin, ctx.scratch)
    # Info level: cabin logs its own snapshot and restore times.
    ctx.env["cabin"] = dict(os.environ, CABIN_LOG="Info", **extra)
    if a.firecracker:
        ctx.bin["firecracker"], extra = ib.stage_binary("firecracker", shutil.which(a.firecracker),
                                                        ctx.scratch)
        ctx.env["firecracker"] = dict(os.environ, **extra)
    ctx.kernel = bb.stage_file(os.path.abspath(a.kernel), os.path.join(ctx.scratch, "guest"))
    ctx.rootfs = bb.stage_file(os.path.abspath(a.rootfs), os.path.join(ctx.scratch, "guest"))
    ctx.snapdir = os.path.join(ctx.scratch, "snapshots")
    os.makedirs(ctx.snapdir)


def main(argv):
    a = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    ctx = Context()
    ctx.args = a
    ctx.scratch = tempfile.mkdtemp(prefix="snapbench-")
    failures, notes = [], []
    samples = {}
    clone_res = None

    consecutive = {}

    def measure(what, fn):
        kind = what.removeprefix("warm-up ")
        if consecutive.get(kind, 0) >= MAX_CONSECUTIVE_FAILURES:
            return None
        t0 = time.monotonic()
        try:
            s = fn()
        except (BenchError, OSError, subprocess.SubprocessError, ValueError) as e:
            log(f"FAILED: {what}: {e}")
            failures.append({"what": what, "error": str(e)})
            consecutive[kind] = consecutive.get(kind, 0) + 1
            if consecutive[kind] == MAX_CONSECUTIVE_FAILURES:
                log(f"{kind}: {MAX_CONSECUTIVE_FAILURES} failures in a row, not trying it again")
            return None
        consecutive[kind] = 0
        brief = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()
                 if not isinstance(v, (dict, list))} if isinstance(s, dict) else s
        log(f"{what} ({time.monotonic() - t0:.1f} s): {json.dumps(brief)}")
        return s

    def add(key, value):
        if value is not None:
            samples.setdefault(key, []).append(value)

    try:
        try:
            setup(ctx)
        except (OSError, BenchError, subprocess.SubprocessError) as e:
            log(f"error: {e}")
            return 2
        argvs = {"restore": restore_argv(ctx, "DIR"),
                 "cold": ib.cabin_argv(ctx, [ctx.rootfs], guest_cmdline(), a.memory, 1,
                                       root_readonly=True)}
        crun_skip = setup_crun(ctx)
        if crun_skip:
            notes.append(f"crun row skipped: {crun_skip}.")
        fc_dir = None
        if a.firecracker:
            fc_dir = measure("firecracker snapshot", lambda: fc_snapshot(ctx, a.memory))
        else:
            notes.append("Firecracker: not given (set FIRECRACKER=/path/to/firecracker to add "
                         "its snapshot restore to the start table).")
        keep = {}
        kept_failed = set()
        for i in range(a.warmup + a.runs):
            warm = i < a.warmup
            r = i - a.warmup
            log(f"--- {'warm-up round' if warm else 'round'} "
                f"{i + 1 if warm else r + 1}/{a.warmup if warm else a.runs} ---")
            if not warm and r < a.create_runs:
                for tag, mib in (("small", a.memory), ("big", a.big)):
                    got = measure(f"create {mib} MiB",
                                  lambda mib=mib, tag=tag: create_once(ctx, mib, tag not in keep))
                    if got is None:
                        continue
                    s, d = got
                    keep.setdefault(tag, d)
                    add(f"create_{tag}_ms", s["create_s"] * 1000.0)
                    add(f"create_{tag}_vmm_ms", s["vmm_ms"])
                    add(f"state_{tag}_kib", s["state_bytes"] / 1024.0)
                    add(f"mem_apparent_{tag}_mib", s["memory_apparent_bytes"] / MIB)
                    add(f"mem_allocated_{tag}_mib", s["memory_allocated_bytes"] / MIB)
                s = measure(f"diff {a.memory} MiB", lambda: diff_once(ctx, a.memory))
                if s:
                    add("full_tracked_ms", s["full_tracked_s"] * 1000.0)
                    add("diff_ms", s["diff_s"] * 1000.0)
                    add("diff_allocated_mib", s["diff_allocated_bytes"] / MIB)
            steps = [("restore_small", lambda: restore_once(ctx, keep["small"]), "small"),
                     ("restore_big", lambda: restore_once(ctx, keep["big"]), "big"),
                     ("cold", lambda: cold_once(ctx, a.memory), None)]
            if not crun_skip:
                steps.append(("crun", lambda: crun_once(ctx), None))
            if fc_dir:
                steps.append(("firecracker", lambda: fc_restore_once(ctx, fc_dir), None))
            for key, fn, needs in steps[i % len(steps):] + steps[:i % len(steps)]:
                if needs and needs not in keep:
                    continue  # its snapshot could not be made (a failure is listed)
                s = measure(f"{'warm-up ' if warm else ''}{key}", fn)
                if needs and s is None and a.keep_failed and needs not in kept_failed:
                    kept_failed.add(needs)
                    notes.append(keep_failed(keep[needs], os.path.join(a.keep_failed, needs)))
                if s and not warm:
                    add(key, s["start_ms"])
                    if "vmm_ms" in s:
                        add(f"{key}_vmm", s["vmm_ms"])
        if "small" in keep:
            clone_res = measure(f"{a.clones} clones", lambda: clones(ctx, keep["small"], a.clones))
    finally:
        shutil.rmtree(ctx.scratch, ignore_errors=True)

    res = {
        "schema": SCHEMA,
        "environment": bb.environment(a),
        "config": {
            "quick": a.quick, "runs": a.runs, "create_runs": a.create_runs, "warmup": a.warmup,
            "memory": a.memory, "big": a.big, "clones": a.clones,
            "kernel": os.path.abspath(a.kernel), "rootfs": os.path.abspath(a.rootfs),
            "cmdline": CMDLINE, "script": GUEST_SCRIPT, "firecracker": a.firecracker,
        },
        "argv": argvs,
        "samples": samples,
        "summary": {k: stats(v) for k, v in samples.items()},
        "clones": clone_res,
        "notes": notes,
        "failures": failures,
    }
    md = render_markdown(res)
    sys.stderr.flush()
    sys.stdout.write(f"{MD_BEGIN}\n{md}{MD_END}\n")
    sys.stdout.write(f"{JSON_BEGIN}\n{json.dumps(res, indent=1)}\n{JSON_END}\n")
    sys.stdout.flush()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
