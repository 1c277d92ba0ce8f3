#!/usr/bin/env python3
"""VMs against containers: the same busybox workloads in four runtimes.

Run by resources/bench/containers.sh (`make bench-containers`), directly where
cabin's `check` says guests boot natively, else inside the nested sandbox.

Runtimes, all started from here, in the same environment:
  host    a plain host process: the host's static busybox, `busybox sh -c SCRIPT`
  crun    a container: `crun run` on an OCI bundle whose rootfs is the busybox
          ext4 image's tree (debugfs rdump), read-only, with its own pid, mount,
          network, ipc, uts and cgroup namespaces, 1 CPU (CFS quota) and a memory
          limit of the guests' size; no daemon
  cabin   a cabin microVM: the project kernel (vmlinux), the busybox ext4 image as
          /dev/vda (read-only, shared by all instances), 1 vCPU
  qemu    QEMU -M microvm with the same kernel, image and vCPU count
The VMs run the workload through the image's init (`cabin.sh=<base64>` on the
kernel command line; see resources/rootfs/init); the others run it with the
image's (crun) or the host's (host) busybox sh. Every instance is given 1 CPU
and --memory MiB (VMs: guest RAM; crun: its cgroup limit; host: nothing).

Launches, interleaved per round (host, crun, cabin, qemu for each kind):
  idle      echo FIRST-OUTPUT; what the instance sees (uname -r, nproc,
            MemTotal); IDLE-READY; then sleeps. Measured: launch to FIRST-OUTPUT
            on its stdout; at IDLE-READY the PSS of every process of the
            instance summed (/proc/PID/smaps_rollup: the launcher, crun and the
            container's processes, or the VMM), and for VMs the guest RAM the
            guest touched (Rss of the guest-memory mapping). Repeated at each
            --memory-sizes value for the growth with the memory given.
  restored  (cabin only, next to its idle launch at --memory) `cabin run
            --restore DIR` of one snapshot, taken once, of an idle guest that
            prints IDLE-READY and then `TICK` every ~2 ms (snapshotted after a
            few): a restored guest printed FIRST-OUTPUT before its snapshot, so
            its "launch to first output" is launch to its first TICK line after
            the restore (the guest answering); its PSS (the VMM's
            smaps_rollup) is taken then. Its guest RAM is the snapshot's memory
            file mapped privately: only the pages the guest touches after the
            restore become resident, and they are the file's (shared) pages
            until written.
  true      `true`: launch to the launcher's exit (a VM's guest reboots).
  work      CPU: `dd if=/dev/zero bs=1M count=C | sha256sum` (C = --cpu-mib),
            timed between markers; disk: dd reads --disk-mib MiB of a file the
            harness wrote (1 MiB blocks) then overwrites it with conv=fsync,
            timed between markers. The file is the VMs' second virtio disk
            (raw, found by its size, read and written with direct I/O so the
            guest's page cache is out of it) and the container's bind-mounted
            /data;
            it lives in a tmpfs (RAM) so the storage device is out of the
            comparison, and the host page cache is dropped before each launch.
Times are taken here, on the monotonic clock, when a marker line arrives on
the instance's stdout (the VMs' serial console).

Then, per runtime:
  density     idle instances started one after another until their summed PSS
              exceeds --density-budget MiB or --density-cap is reached; the
              count that fit, and the budget divided by the mean PSS.
  concurrent  --concurrent idle instances launched at once: time until the last
              printed IDLE-READY.
  size        bytes on disk of everything each needs to start: the program and
              the shared libraries it loads, plus kernel and image (VMs, QEMU's
              firmware too) or the bundle (crun).

Output: Markdown and JSON between marker lines on stdout (containers.sh cuts
them out):
  ===== CONTAINERS MARKDOWN BEGIN ===== ... ===== CONTAINERS MARKDOWN END =====
  ===== CONTAINERS JSON BEGIN =====     ... ===== CONTAINERS JSON END =====
With --check (the QUICK mode of make test) it also verifies that every cell
came from a real run: no missing or zero value, the VMs' `uname -r` differs
from the host's and the container's equals it.

Exit status: 0 all measurements succeeded (and the check passed), 1 some
failed, 2 bad arguments or missing inputs.

Python 3 standard library only; the VM launching and console helpers are
iobench.py's and bootbench.py's, imported.
"""

import argparse
import base64
import json
import math
import os
import platform
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
import iobench as ib  # noqa: E402

MD_BEGIN = "===== CONTAINERS MARKDOWN BEGIN ====="
MD_END = "===== CONTAINERS MARKDOWN END ====="
JSON_BEGIN = "===== CONTAINERS JSON BEGIN ====="
JSON_END = "===== CONTAINERS JSON END ====="
SCHEMA = "cabin-containers/1"

RUNTIMES = ("host", "crun", "cabin", "qemu")
VMS = ("cabin", "qemu")
LABEL = {"host": "host process", "crun": "crun container", "cabin": "cabin microVM",
         "qemu": "QEMU microvm"}
HOST_BUSYBOX = "/bin/busybox"
CMDLINE = {
    "cabin": "console=ttyS0 reboot=k panic=-1 quiet root=/dev/vda ro rootfstype=ext4",
    "qemu": "console=ttyS0 reboot=t panic=-1 quiet root=/dev/vda ro rootfstype=ext4",
}
VM_MARKER = b"CABIN-ROOTFS-READY"

FIRST = b"FIRST-OUTPUT"
INFO = b"INFO "
IDLE = b"IDLE-READY"
IDLE_SCRIPT = (
    "echo FIRST-OUTPUT\n"
    "echo \"INFO $(uname -r) $(nproc) $(awk '/^MemTotal/{print $2}' /proc/meminfo)\"\n"
    "echo IDLE-READY\n"
    "exec sleep 1000000\n"
)
TRUE_SCRIPT = "true\n"
RESTORE_SCRIPT = "echo IDLE-READY\nwhile :; do echo TICK; usleep 2000; done\n"
TICK = b"TICK"
SNAPSHOT_TICKS = 3
# D (the data file or disk), C (CPU MiB), M (disk MiB), E (an error file) and
# R/W (dd flags: direct I/O in the VMs, whose disk is cached by the host, so
# that the guest's own page cache is not measured instead) are set by a
# per-runtime prefix.
WORK_BODY = (
    "echo CPU-START\n"
    "dd if=/dev/zero bs=1M count=$C 2>/dev/null|sha256sum\n"
    "echo CPU-END\n"
    "dd if=$D of=/dev/null bs=1M count=$M $R 2>$E||{ cat $E;echo WORK-FAILED;exit 1;}\n"
    "echo DISK-READ-END\n"
    "dd if=/dev/zero of=$D bs=1M count=$M $W conv=notrunc,fsync 2>$E||{ cat $E;echo WORK-FAILED;exit 1;}\n"
    "echo DISK-WRITE-END\n"
)

# Rows of the table: (key, label, format, lower is better).
ROWS = [
    ("size_mib", "Size on disk to start (MiB)", "{:.1f}", True),
    ("first_output_ms", "Start: launch to first output (ms)", "{:.0f}", True),
    ("restored_first_output_ms", "Start: restored from a snapshot, launch to first output (ms)",
     "{:.0f}", True),
    ("true_exit_ms", "Start: launch to exit of `true` (ms)", "{:.0f}", True),
    ("idle_pss_mib", "Memory: PSS per idle instance (MiB)", "{:.1f}", True),
    ("restored_idle_pss_mib", "Memory: PSS per idle instance restored from a snapshot (MiB)",
     "{:.1f}", True),
    ("guest_touched_mib", "Memory: guest RAM touched (MiB)", "{:.1f}", True),
    ("cpu_s", "CPU: sha256 of generated data (s)", "{:.2f}", True),
    ("cpu_ratio", "CPU: time relative to the host process", "{:.2f}", True),
    ("disk_read_mibs", "Disk: sequential read (MiB/s)", "{:.0f}", False),
    ("disk_write_mibs", "Disk: sequential write + fsync (MiB/s)", "{:.0f}", False),
    ("density", "Density: idle instances within the budget", "{:.0f}", False),
    ("concurrent_s", "Density: concurrent start of N, until the last is up (s)", "{:.2f}", True),
]
# Rows with no meaning for a runtime: the check allows them to be absent.
NOT_APPLICABLE = {("guest_touched_mib", "host"), ("guest_touched_mib", "crun")} | {
    (key, rt) for key in ("restored_first_output_ms", "restored_idle_pss_mib")
    for rt in RUNTIMES if rt != "cabin"}

MAX_CONSECUTIVE_FAILURES = 2
CONCURRENT = 20
CONCURRENT_NESTED = 6


def log(msg):
    print(f"containers: {msg}", file=sys.stderr, flush=True)


BenchError = bb.BenchError


# --- /proc: process trees and PSS --------------------------------------------------


def children_map():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1:
            kids.setdefault(int(fields[1]), []).append(int(name))
    return kids


def process_tree(roots):
    kids = children_map()
    seen, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(kids.get(pid, []))
    return sorted(seen)


def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass  # the process is gone, or a kernel thread
    return 0


# --- the runtimes --------------------------------------------------------------------


class Context:
    pass


def vm_prefix(ctx):
    return (
        f"C={ctx.args.cpu_mib};M={ctx.args.disk_mib};E=/tmp/e;R=iflag=direct;W=oflag=direct;D=\n"
        + ib.find_data_disk(ctx.args.disk_mib)
        + "[ -n \"$D\" ]||{ echo NO-DATA-DISK;echo WORK-FAILED;exit 2;}\n"
    )


def crun_bundle(ctx, script, memory_mib, data):
    """A bundle directory whose config runs SCRIPT with the image's busybox."""
    ctx.bundles += 1
    bundle = os.path.join(ctx.scratch, "bundles", str(ctx.bundles))
    os.makedirs(bundle)
    config = json.loads(json.dumps(ctx.crun_spec))  # a deep copy
    config["root"] = {"path": ctx.crun_rootfs, "readonly": True}
    proc = config["process"]
    proc["terminal"] = False
    proc["args"] = ["/bin/sh", "-c", script]
    proc["env"] = ["PATH=/sbin:/usr/sbin:/bin:/usr/bin", "HOME=/root"]
    proc["cwd"] = "/"
    config["hostname"] = "crun"
    mounts = config.setdefault("mounts", [])
    mounts.append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "nodev", "mode=1777"]})
    if data:
        mounts.append({"destination": "/data", "type": "bind", "source": os.path.dirname(data),
                       "options": ["rbind", "rw"]})
    linux = config.setdefault("linux", {})
    resources = linux.setdefault("resources", {})
    resources["memory"] = {"limit": memory_mib << 20}
    resources["cpu"] = {"quota": 100000, "period": 100000}
    with open(os.path.join(bundle, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)
    return bundle


def launch(ctx, rt, kind, memory_mib=None, data=None):
    """Start one instance running the KIND workload; returns an ib.Vm (any process)."""
    a = ctx.args
    memory_mib = memory_mib or a.memory
    script = {"idle": IDLE_SCRIPT, "true": TRUE_SCRIPT}.get(kind)
    if rt in VMS:
        if kind == "work":
            script = vm_prefix(ctx) + WORK_BODY
        line = f"{CMDLINE[rt]} cabin.sh={base64.b64encode(script.encode()).decode()}"
        if len(line) > ib.MAX_CMDLINE:
            raise BenchError(f"guest command line too long ({len(line)} bytes)")
        disks = [ctx.rootfs] + ([data] if data else [])
        make_argv = ib.cabin_argv if rt == "cabin" else ib.qemu_argv
        argv = make_argv(ctx, disks, line, memory_mib, 1, root_readonly=True)
        return ib.Vm(argv, ctx.env[rt])
    if kind == "work":
        if rt == "host":
            prefix = f"C={a.cpu_mib};M={a.disk_mib};E={ctx.scratch}/host-err;R=;W=;D={data}\n"
        else:
            prefix = (f"C={a.cpu_mib};M={a.disk_mib};E=/tmp/e;R=;W=;"
                      f"D=/data/{os.path.basename(data)}\n")
        script = prefix + WORK_BODY
    if rt == "host":
        env = dict(os.environ, PATH=ctx.busybox_bin)
        return ib.Vm([ctx.bin["busybox"], "sh", "-c", script], env)
    return crun_launch(ctx, script, memory_mib, data)


def crun_launch(ctx, script, memory_mib, data=None):
    """`crun run` of a fresh bundle running SCRIPT: an ib.Vm with container_id and
    bundle set (stop() ends the container; the bundle is the caller's to remove)."""
    ctx.containers += 1
    cid = f"cbench-{os.getpid()}-{ctx.containers}"
    bundle = crun_bundle(ctx, script, memory_mib, data)
    vm = ib.Vm([ctx.bin["crun"], "--root", ctx.crun_root, "run", "--bundle", bundle, cid],
               ctx.env["crun"])
    vm.container_id = cid
    vm.bundle = bundle
    return vm


def stop(ctx, vm):
    cid = getattr(vm, "container_id", None)
    if cid and vm.proc.poll() is None:
        # The container's processes hold the output pipe open: kill them first
        # (killing `crun run` alone would leave them running).
        subprocess.run([ctx.bin["crun"], "--root", ctx.crun_root, "delete", "-f", cid],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=ctx.env["crun"], check=False)
    vm.stop()


def instance_pids(ctx, vm):
    roots = [vm.proc.pid]
    cid = getattr(vm, "container_id", None)
    if cid and getattr(vm, "container_pid", None) is None:
        # The container's init may not stay a child of `crun run`: ask crun
        # (once per container: density asks again for every instance).
        r = subprocess.run([ctx.bin["crun"], "--root", ctx.crun_root, "state", cid],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, env=ctx.env["crun"], check=False)
        try:
            vm.container_pid = int(json.loads(r.stdout)["pid"])
        except (ValueError, KeyError, TypeError):
            vm.container_pid = 0
    if getattr(vm, "container_pid", 0):
        roots.append(vm.container_pid)
    return process_tree(roots)


def wait_marker(vm, marker, deadline, start=0):
    try:
        return vm.console.wait_for(marker, deadline, start)
    except BenchError as e:
        raise BenchError(f"{e}{vm.details()}") from e


def drop_host_caches():
    try:
        with open("/proc/sys/vm/drop_caches", "w", encoding="ascii") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


# --- one launch of each kind ---------------------------------------------------------


def idle_once(ctx, rt, memory_mib):
    with launch(ctx, rt, "idle", memory_mib=memory_mib) as vm:
        try:
            deadline = vm.t_spawn + ctx.args.timeout
            t_first, _ = wait_marker(vm, FIRST, deadline)
            _, info, _ = vm.console.wait_line(INFO, deadline)
            wait_marker(vm, IDLE, deadline)
            pids = instance_pids(ctx, vm)
            sample = {
                "memory_mib": memory_mib,
                "first_output_ms": (t_first - vm.t_spawn) * 1000.0,
                "idle_pss_mib": sum(pss_kb(p) for p in pids) / 1024.0,
                "processes": len(pids),
            }
            parts = info.split()
            if len(parts) != 3:
                raise BenchError(f"garbled INFO line {info!r}{vm.details()}")
            sample["seen"] = {"uname_r": parts[0], "nproc": int(parts[1]),
                              "memtotal_kib": int(parts[2])}
            if rt in VMS:
                maps = bb.read_smaps(vm.proc.pid)
                guest, how = bb.guest_ram_mappings(maps, memory_mib * 1024)
                if not guest:
                    raise BenchError(f"no guest RAM mapping of {memory_mib} MiB in the VMM's smaps")
                sample["guest_touched_mib"] = sum(m["rss_kb"] for m in guest) / 1024.0
                sample["guest_mapping_match"] = how
            return sample
        finally:
            stop(ctx, vm)


def idle_snapshot(ctx):
    """The snapshot the restored rows start from, made on first use: the idle
    guest of RESTORE_SCRIPT at --memory MiB, after a few TICK lines."""
    if ctx.snapshot:
        return ctx.snapshot
    a = ctx.args
    sock = os.path.join(ctx.scratch, "snapshot.sock")
    snap = os.path.join(ctx.scratch, "snapshot")
    line = f"{CMDLINE['cabin']} cabin.sh={base64.b64encode(RESTORE_SCRIPT.encode()).decode()}"
    argv = ib.cabin_argv(ctx, [ctx.rootfs], line, a.memory, 1, root_readonly=True)
    env = ctx.env["cabin"]
    ctl = [ctx.bin["cabin"], "ctl", "--api-sock", sock]
    try:
        with ib.Vm(argv + ["--api-sock", sock], env) as vm:
            ib.wait_path(sock, vm)
            ib.timed_run(ctl + ["start"], env, "cabin ctl start")
            deadline = time.monotonic() + a.timeout
            end = 0
            for _ in range(SNAPSHOT_TICKS):
                _, end = wait_marker(vm, TICK, deadline, end)
            ib.timed_run(ctl + ["snapshot", snap], env, "cabin ctl snapshot")
    finally:
        if os.path.exists(sock):
            os.unlink(sock)
    ctx.snapshot = snap
    return snap


def restored_once(ctx):
    snap = idle_snapshot(ctx)
    with ib.Vm([ctx.bin["cabin"], "run", "--restore", snap], ctx.env["cabin"]) as vm:
        t, _ = wait_marker(vm, TICK, vm.t_spawn + ctx.args.timeout)
        pids = process_tree([vm.proc.pid])
        return {"restored_first_output_ms": (t - vm.t_spawn) * 1000.0,
                "restored_idle_pss_mib": sum(pss_kb(p) for p in pids) / 1024.0}


def true_once(ctx, rt):
    with launch(ctx, rt, "true") as vm:
        try:
            rc = vm.wait_exit(ctx.args.timeout)
            t_exit = time.monotonic()
            if rc is None:
                raise BenchError(f"`true` did not end within {ctx.args.timeout:g} s{vm.details()}")
            if rc != 0:
                raise BenchError(f"`true` ended with status {rc}{vm.details()}")
            if rt in VMS and VM_MARKER not in vm.console.buf:
                raise BenchError(f"the guest never reached its init{vm.details()}")
            return {"true_exit_ms": (t_exit - vm.t_spawn) * 1000.0}
        finally:
            stop(ctx, vm)


def work_once(ctx, rt):
    a = ctx.args
    data = os.path.join(ctx.data_dir, f"data-{rt}.img")
    with open(data, "wb") as f:
        block = b"\xa5" * (1 << 20)
        for _ in range(a.disk_mib):
            f.write(block)
    dropped = drop_host_caches()
    try:
        with launch(ctx, rt, "work", data=data) as vm:
            try:
                deadline = vm.t_spawn + a.timeout
                times = {}
                for name in (b"CPU-START", b"CPU-END", b"DISK-READ-END", b"DISK-WRITE-END"):
                    with vm.console.cond:
                        failed = b"WORK-FAILED" in vm.console.buf
                    if failed:
                        raise BenchError(f"the workload failed{vm.details()}")
                    times[name], _ = wait_marker(vm, name, deadline)
                cpu = times[b"CPU-END"] - times[b"CPU-START"]
                read = times[b"DISK-READ-END"] - times[b"CPU-END"]
                write = times[b"DISK-WRITE-END"] - times[b"DISK-READ-END"]
                return {
                    "cpu_s": cpu,
                    "disk_read_mibs": a.disk_mib / read if read > 0 else None,
                    "disk_write_mibs": a.disk_mib / write if write > 0 else None,
                    "host_caches_dropped": dropped,
                }
            finally:
                stop(ctx, vm)
    finally:
        os.unlink(data)


def density(ctx, rt):
    a = ctx.args
    started = []
    try:
        total = 0.0
        fitted = 0
        while fitted < a.density_cap:
            vm = launch(ctx, rt, "idle")
            started.append(vm)
            wait_marker(vm, IDLE, vm.t_spawn + a.timeout)
            pids = set()
            for v in started:
                pids.update(instance_pids(ctx, v))
            total = sum(pss_kb(p) for p in pids) / 1024.0
            if total > a.density_budget:
                break
            fitted += 1
        per = total / len(started)
        return {
            "density": fitted,
            "capped": fitted >= a.density_cap,
            "started": len(started),
            "total_pss_mib": total,
            "projected": math.floor(a.density_budget / per) if per > 0 else None,
        }
    finally:
        for vm in started:
            stop(ctx, vm)


def concurrent(ctx, rt):
    a = ctx.args
    vms = []
    try:
        t0 = time.monotonic()
        for _ in range(a.concurrent):
            vms.append(launch(ctx, rt, "idle"))
        log(f"concurrent {rt}: {len(vms)} launched")
        last = t0
        for n, vm in enumerate(vms, 1):
            t, _ = wait_marker(vm, IDLE, t0 + a.timeout)
            last = max(last, t)
            log(f"concurrent {rt}: instance {n} up after {t - t0:.1f} s")
        return {"concurrent_s": last - t0}
    finally:
        for vm in vms:
            stop(ctx, vm)


# --- sizes -----------------------------------------------------------------------------


def disk_bytes(path):
    """(allocated, apparent) bytes of a file or a directory tree, links not followed."""
    allocated = apparent = 0
    paths = [path]
    if os.path.isdir(path) and not os.path.islink(path):
        paths = []
        for root, dirs, files in os.walk(path):
            paths.append(root)
            paths += [os.path.join(root, n) for n in files]
            paths += [os.path.join(root, d) for d in dirs if os.path.islink(os.path.join(root, d))]
    for p in paths:
        st = os.lstat(p)
        allocated += st.st_blocks * 512
        apparent += st.st_size
    return allocated, apparent


def program_files(binary):
    """The binary and the shared libraries `ldd` resolves for it."""
    files = [os.path.realpath(binary)]
    files += [os.path.realpath(lib) for lib in bb.shared_libraries(binary)]
    return files


def sizes(ctx):
    need = {
        "host": program_files(ctx.orig["busybox"]),
        "crun": program_files(ctx.orig["crun"]) + [ctx.crun_rootfs],
        "cabin": program_files(ctx.orig["cabin"]) + [ctx.args.kernel, ctx.args.rootfs],
        "qemu": (program_files(ctx.orig["qemu"]) + [ctx.args.kernel, ctx.args.rootfs]
                 + [os.path.realpath(f) for f in bb.qemu_firmware(ctx.orig["qemu"])]),
    }
    out = {}
    for rt, files in need.items():
        items = []
        for p in dict.fromkeys(files):
            allocated, apparent = disk_bytes(p)
            items.append({"path": p, "allocated": allocated, "apparent": apparent})
        out[rt] = {
            "size_mib": sum(i["allocated"] for i in items) / (1 << 20),
            "apparent_mib": sum(i["apparent"] for i in items) / (1 << 20),
            "items": items,
        }
    return out


# --- results -------------------------------------------------------------------------


def summaries(rec, host_cpu_median):
    summary = {}
    for rt in RUNTIMES:
        s = {}
        for key, _, _, _ in ROWS:
            vals = [x[key] for x in rec["samples"].get(rt, []) if x.get(key) is not None]
            s[key] = bb.summarize(vals)
        if host_cpu_median:
            s["cpu_ratio"] = bb.summarize(
                [x["cpu_s"] / host_cpu_median for x in rec["samples"].get(rt, [])
                 if x.get("cpu_s") is not None])
        summary[rt] = s
    return summary


def cell(s, fmt):
    if s is None:
        return "–"
    if s["n"] == 1 or s["min"] == s["max"]:
        return fmt.format(s["median"])
    return bb.cell(s, fmt)


def render_markdown(res):
    env = res["environment"]
    cfg = res["config"]
    summary = res["summary"]
    lines = [
        "## VMs against containers: the same busybox workloads",
        "",
        bb.environment_line(env),
    ]
    if env["kind"] != "direct":
        lines.append("Measured inside the nested sandbox (QEMU TCG with nested KVM): these are not "
                     "hardware numbers; compare the runtimes with each other.")
    lines += [
        f"Medians of {cfg['runs']} run(s) (min–max). Each instance was given 1 CPU and "
        f"{cfg['memory']} MiB. CPU job {cfg['cpu_mib']} MiB, disk {cfg['disk_mib']} MiB on a "
        f"tmpfs-backed file; density budget {cfg['density_budget']} MiB (cap {cfg['density_cap']}), "
        f"{cfg['concurrent']} concurrent starts.",
        "",
        "| Metric | " + " | ".join(LABEL[rt] for rt in RUNTIMES) + " |",
        "|---|" + "---|" * len(RUNTIMES),
    ]
    for key, label, fmt, _ in ROWS:
        label = label.replace("of N", f"of {cfg['concurrent']}")
        cells = []
        for rt in RUNTIMES:
            if (key, rt) in NOT_APPLICABLE:
                cells.append("n/a")
                continue
            c = cell(summary[rt].get(key), fmt)
            if key == "density" and c != "–":
                d = res["density"].get(rt, {})
                if d.get("capped"):
                    c = f"≥{c} (cap; ≈{d.get('projected')} by PSS)"
            cells.append(c)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Memory with the memory given (PSS per idle instance, MiB; median):", "",
              "| Given (MiB) | " + " | ".join(LABEL[rt] for rt in RUNTIMES) + " |",
              "|---|" + "---|" * len(RUNTIMES)]
    for m in cfg["memory_sizes"]:
        row = []
        for rt in RUNTIMES:
            vals = [x["idle_pss_mib"] for x in res["growth"].get(rt, [])
                    if x["memory_mib"] == m]
            row.append(f"{bb.summarize(vals)['median']:.1f}" if vals else "–")
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    lines += ["", "What each instance sees (given 1 CPU and "
              f"{cfg['memory']} MiB; the host has {env['cpus']} CPUs, "
              f"{res['host_memtotal_kib'] // 1024} MiB, kernel {res['host_uname_r']}):", "",
              "| Runtime | `uname -r` | `nproc` | MemTotal (MiB) |", "|---|---|---|---|"]
    for rt in RUNTIMES:
        seen = res["seen"].get(rt)
        if seen:
            lines.append(f"| {LABEL[rt]} | {seen['uname_r']} | {seen['nproc']} | "
                         f"{seen['memtotal_kib'] // 1024} |")
        else:
            lines.append(f"| {LABEL[rt]} | – | – | – |")
    lines += ["", "Size counts the program and the shared libraries it loads, plus the kernel "
              "(vmlinux) and the image for the VMs (and QEMU's firmware), or the bundle's "
              "rootfs for crun; bytes allocated on disk.", ""]
    if res["check"] is not None:
        lines.append("Check: " + ("passed" if not res["check"] else
                                   "FAILED: " + "; ".join(res["check"])))
        lines.append("")
    if res["failures"]:
        lines.append("Failed measurements (a failed launch is tried once more; \"retried\" ones "
                     "succeeded the second time, and their values are in the table):")
        for f in res["failures"]:
            first = f["error"].splitlines()[0] if f["error"] else ""
            again = "failed again" if f.get("final", True) else "retried"
            lines.append(f"- {f['what']} {f['who']} ({again}): {first}")
            # The VMM's own last words (e.g. a guest triple fault) matter most.
            for line in f["error"].splitlines():
                if line.startswith("cabin: ") or "qemu-system" in line:
                    lines.append(f"  - `{line.strip()}`")
        lines.append("")
    return "\n".join(lines) + "\n"


def check(res):
    """What is wrong with the results: missing or zero cells, isolation rows."""
    problems = []
    for key, label, _, _ in ROWS:
        for rt in RUNTIMES:
            if (key, rt) in NOT_APPLICABLE:
                continue
            s = res["summary"][rt].get(key)
            if s is None or not s["median"]:
                problems.append(f"{label} / {rt}: no value")
    for rt in RUNTIMES:
        if not res["seen"].get(rt):
            problems.append(f"{rt}: nothing seen from inside")
        for m in res["config"]["memory_sizes"]:
            if not any(x["memory_mib"] == m for x in res["growth"].get(rt, [])):
                problems.append(f"{rt}: no memory sample at {m} MiB")
    host = res["host_uname_r"]
    for rt in VMS:
        seen = res["seen"].get(rt)
        if seen and seen["uname_r"] == host:
            problems.append(f"{rt}: the guest's uname -r equals the host's ({host})")
    seen = res["seen"].get("crun")
    if seen and seen["uname_r"] != host:
        problems.append(f"crun: the container's uname -r {seen['uname_r']} is not the host's {host}")
    return problems


# --- main --------------------------------------------------------------------------------


def parse_args(argv):
    repo = os.path.dirname(os.path.dirname(HERE))
    p = argparse.ArgumentParser(description="VMs against containers: the same workloads in "
                                            "a host process, crun, cabin and QEMU microvm.")
    p.add_argument("--quick", action="store_true",
                   help="one run, small sizes (the make test mode)")
    p.add_argument("--check", action="store_true",
                   help="fail unless every cell has a real value and uname -r is as expected")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--phases", default="launches,density,concurrent",
                   help="comma-separated phases, for debugging (default all: launches,density,concurrent)")
    p.add_argument("--runtimes", default=",".join(RUNTIMES),
                   help="comma-separated runtimes to measure, for debugging (default all)")
    p.add_argument("--memory", type=int, default=128, help="MiB given to each instance")
    p.add_argument("--memory-sizes", default="128,512,2048",
                   help="MiB for the memory-growth launches (default 128,512,2048)")
    p.add_argument("--cpu-mib", type=int, default=256, help="MiB hashed by the CPU job")
    p.add_argument("--disk-mib", type=int, default=256, help="MiB read and written")
    p.add_argument("--density-budget", type=int, default=1024, help="host MiB for density")
    p.add_argument("--density-cap", type=int, default=40, help="most instances density starts")
    p.add_argument("--concurrent", type=int, default=None,
                   help=f"instances started at once (default {CONCURRENT}; {CONCURRENT_NESTED} in"
                        " the nested sandbox, whose own KVM soft-locks with 20 guests booting at once)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds one launch may take")
    p.add_argument("--cabin", default=os.path.join(repo, "target", "release", "cabin"))
    p.add_argument("--qemu", default=shutil.which("qemu-system-x86_64") or "qemu-system-x86_64")
    # ACPI on: the project kernel finds virtio-mmio devices in the DSDT only.
    p.add_argument("--qemu-machine", default="microvm,acpi=on,rtc=off")
    p.add_argument("--crun", default=shutil.which("crun") or "crun")
    p.add_argument("--kernel", default=os.environ.get("CABIN_VMLINUX"))
    p.add_argument("--rootfs", default=os.environ.get("CABIN_ROOTFS"))
    p.add_argument("--environment", default="direct")
    p.add_argument("--host-cpu", default=None)
    p.add_argument("--commit", default="")
    a = p.parse_args(argv)
    if a.concurrent is None:
        a.concurrent = CONCURRENT_NESTED if a.environment == "nested-sandbox" else CONCURRENT
    if a.quick:
        a.runs = 1
        a.cpu_mib = a.disk_mib = 16
        a.memory_sizes = f"{a.memory},256"
        a.density_budget, a.density_cap, a.concurrent = 256, 3, 3
    try:
        a.memory_sizes = sorted({int(x) for x in a.memory_sizes.split(",") if x.strip()})
    except ValueError:
        p.error(f"--memory-sizes takes MiB numbers separated by commas, not {a.memory_sizes!r}")
    a.phases = {x.strip() for x in a.phases.split(",") if x.strip()}
    if not a.phases or a.phases - {"launches", "density", "concurrent"}:
        p.error("--phases takes some of launches,density,concurrent")
    a.runtimes = [r.strip() for r in a.runtimes.split(",") if r.strip()]
    if not a.runtimes or any(r not in RUNTIMES for r in a.runtimes):
        p.error(f"--runtimes takes some of {','.join(RUNTIMES)}")
    if a.memory not in a.memory_sizes:
        a.memory_sizes = sorted(set(a.memory_sizes) | {a.memory})
    for name in ("runs", "memory", "cpu_mib", "disk_mib", "density_budget", "density_cap",
                 "concurrent"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.disk_mib == 32:
        p.error("--disk-mib 32 is the root image's size: the guest finds the data disk by size")
    for name, path in (("--kernel ($CABIN_VMLINUX)", a.kernel), ("--rootfs ($CABIN_ROOTFS)", a.rootfs)):
        if not path or not os.path.isfile(path):
            p.error(f"{name}: {path!r} is not a file")
    return a


def extract_rootfs(image, dest):
    """The image's tree, for the OCI bundle (debugfs needs no mount)."""
    os.makedirs(dest)
    r = subprocess.run(["debugfs", "-R", f"rdump / {dest}", image], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if r.returncode != 0 or not os.path.exists(os.path.join(dest, "bin", "busybox")):
        raise BenchError(f"debugfs rdump of {image} failed: {r.stdout.decode('utf-8', 'replace')}")


def crun_spec(crun, env, scratch):
    d = os.path.join(scratch, "spec")
    os.makedirs(d)
    r = subprocess.run([crun, "spec"], cwd=d, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=env, check=False)
    if r.returncode != 0:
        raise BenchError(f"crun spec failed: {r.stdout.decode('utf-8', 'replace')}")
    with open(os.path.join(d, "config.json"), encoding="utf-8") as f:
        return json.load(f)


def host_busybox_dir(scratch):
    """PATH for the host process: one link per busybox applet."""
    d = os.path.join(scratch, "busybox-bin")
    os.makedirs(d)
    r = subprocess.run([HOST_BUSYBOX, "--list"], stdout=subprocess.PIPE, check=True)
    for applet in r.stdout.decode().split():
        os.symlink(HOST_BUSYBOX, os.path.join(d, applet))
    return d


def setup(ctx):
    a = ctx.args
    scratch = ctx.scratch
    ctx.orig = {"cabin": shutil.which(a.cabin), "qemu": shutil.which(a.qemu),
                "crun": shutil.which(a.crun), "busybox": HOST_BUSYBOX}
    for name, path in ctx.orig.items():
        if not path or not os.access(path, os.X_OK):
            raise BenchError(f"{name} is missing ({path or getattr(a, name, name)}): "
                             "resources/deps.sh installs it")
    ctx.bin, ctx.env = {}, {}
    for rt, name in (("cabin", "cabin"), ("qemu", "qemu"), ("crun", "crun")):
        # Copied to the tmpfs with their libraries: inside the sandbox the host's
        # files come over 9p, and every exec would re-read them (see bootbench.py).
        ctx.bin[name], extra = ib.stage_binary(name, ctx.orig[name], scratch)
        ctx.env[rt] = dict(os.environ, **extra)
    ctx.bin["busybox"] = bb.stage_file(HOST_BUSYBOX, os.path.join(scratch, "busybox"))
    ctx.env["host"] = dict(os.environ)
    ctx.kernel = bb.stage_file(os.path.abspath(a.kernel), os.path.join(scratch, "guest"))
    ctx.rootfs = bb.stage_file(os.path.abspath(a.rootfs), os.path.join(scratch, "guest"))
    ctx.busybox_bin = host_busybox_dir(scratch)
    ctx.crun_rootfs = os.path.join(scratch, "bundle-rootfs")
    extract_rootfs(ctx.rootfs, ctx.crun_rootfs)
    ctx.crun_root = os.path.join(scratch, "crun-state")
    os.makedirs(ctx.crun_root)
    ctx.crun_spec = crun_spec(ctx.bin["crun"], ctx.env["crun"], scratch)
    ctx.bundles = ctx.containers = 0
    ctx.snapshot = None
    if ib.fs_type("/dev/shm") == "tmpfs" and os.access("/dev/shm", os.W_OK):
        ctx.data_dir = tempfile.mkdtemp(prefix="containers-", dir="/dev/shm")
    else:
        ctx.data_dir = os.path.join(scratch, "data")
        os.makedirs(ctx.data_dir)


def main(argv):
    a = parse_args(argv)
    # A signal (the sandbox's timeout, Ctrl-C) unwinds through the cleanups.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    ctx = Context()
    ctx.args = a
    ctx.scratch = tempfile.mkdtemp(prefix="containers-")
    ctx.data_dir = None
    failures = []
    rec = {"samples": {rt: [] for rt in RUNTIMES}}
    growth = {rt: [] for rt in RUNTIMES}
    seen = {}
    dens = {}
    size = {}
    try:
        try:
            setup(ctx)
        except (OSError, BenchError, subprocess.SubprocessError) as e:
            log(f"error: {e}")
            return 2
        log(f"staged in {ctx.scratch}; runtimes {', '.join(RUNTIMES)}; {a.runs} run(s)")
        consecutive = {}

        def measure(what, rt, fn):
            """One measurement; a failed one is tried once more at once. Every
            failure is listed in the report; only one that failed both times
            makes the exit status 1."""
            key = (what, rt)
            if consecutive.get(key, 0) >= MAX_CONSECUTIVE_FAILURES:
                return None
            for attempt in (1, 2):
                t0 = time.monotonic()
                try:
                    s = fn()
                except (BenchError, OSError, subprocess.SubprocessError, ValueError) as e:
                    log(f"FAILED: {what} {rt} (attempt {attempt}): {e}")
                    failures.append({"what": what, "who": rt, "error": str(e),
                                     "attempt": attempt, "final": attempt == 2})
                    continue
                consecutive[key] = 0
                brief = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()
                         if not isinstance(v, (dict, list))}
                log(f"{what} {rt} ({time.monotonic() - t0:.1f} s): {json.dumps(brief)}")
                return s
            consecutive[key] = consecutive.get(key, 0) + 1
            return None

        for i in range(a.runs if "launches" in a.phases else 0):
            log(f"--- run {i + 1}/{a.runs} ---")
            for m in a.memory_sizes:
                for rt in a.runtimes:
                    s = measure(f"idle@{m}MiB", rt, lambda rt=rt, m=m: idle_once(ctx, rt, m))
                    if s is None:
                        continue
                    growth[rt].append({"memory_mib": m, "idle_pss_mib": s["idle_pss_mib"]})
                    if m == a.memory:
                        rec["samples"][rt].append(s)
                        seen.setdefault(rt, s["seen"])
                if m == a.memory and "cabin" in a.runtimes:
                    s = measure("idle-restored", "cabin", lambda: restored_once(ctx))
                    if s is not None:
                        rec["samples"]["cabin"].append(s)
            for kind, fn in (("true", true_once), ("work", work_once)):
                for rt in a.runtimes:
                    s = measure(kind, rt, lambda rt=rt, fn=fn: fn(ctx, rt))
                    if s is not None:
                        rec["samples"][rt].append(s)
        log("--- density and concurrent starts ---")
        for rt in a.runtimes:
            s = None
            if "density" in a.phases:
                s = measure("density", rt, lambda rt=rt: density(ctx, rt))
            if s is not None:
                dens[rt] = s
                rec["samples"][rt].append({"density": s["density"]})
            s = None
            if "concurrent" in a.phases:
                s = measure("concurrent", rt, lambda rt=rt: concurrent(ctx, rt))
            if s is not None:
                rec["samples"][rt].append(s)
        try:
            size = sizes(ctx)
        except (OSError, BenchError) as e:
            failures.append({"what": "size", "who": "all", "error": str(e)})
        for rt, s in size.items():
            rec["samples"][rt].append({"size_mib": s["size_mib"]})
    finally:
        shutil.rmtree(ctx.scratch, ignore_errors=True)
        if ctx.data_dir:
            shutil.rmtree(ctx.data_dir, ignore_errors=True)

    host_cpu = bb.summarize([x["cpu_s"] for x in rec["samples"]["host"] if x.get("cpu_s")])
    memtotal = 0
    with open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                memtotal = int(line.split()[1])
    res = {
        "schema": SCHEMA,
        "environment": bb.environment(a),
        "config": {
            "quick": a.quick, "runs": a.runs, "memory": a.memory, "memory_sizes": a.memory_sizes,
            "cpu_mib": a.cpu_mib, "disk_mib": a.disk_mib, "density_budget": a.density_budget,
            "density_cap": a.density_cap, "concurrent": a.concurrent,
            "kernel": os.path.abspath(a.kernel), "rootfs": os.path.abspath(a.rootfs),
            "qemu_machine": a.qemu_machine, "cmdline": CMDLINE,
            "scripts": {"idle": IDLE_SCRIPT, "true": TRUE_SCRIPT, "work": WORK_BODY,
                        "restored": RESTORE_SCRIPT},
        },
        "runtimes": list(RUNTIMES),
        "labels": LABEL,
        "rows": [{"key": k, "label": l.replace("of N", f"of {a.concurrent}"), "lower_is_better": low}
                 for k, l, _, low in ROWS],
        "host_uname_r": platform.release(),
        "host_memtotal_kib": memtotal,
        "samples": rec["samples"],
        "summary": summaries(rec, host_cpu["median"] if host_cpu else None),
        "growth": growth,
        "seen": seen,
        "density": dens,
        "sizes": size,
        "failures": failures,
        "check": None,
    }
    if a.check:
        res["check"] = check(res)
        for problem in res["check"]:
            log(f"CHECK FAILED: {problem}")
    md = render_markdown(res)
    sys.stderr.flush()
    sys.stdout.write(f"{MD_BEGIN}\n{md}{MD_END}\n")
    sys.stdout.write(f"{JSON_BEGIN}\n{json.dumps(res, indent=1)}\n{JSON_END}\n")
    sys.stdout.flush()
    return 1 if any(f.get("final", True) for f in failures) or res["check"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
