#!/usr/bin/env python3
"""Soak: many guests, many at once, each with disk and network traffic.

`make soak` boots --guests guests (default 100), at most --parallel (default 30)
at a time, alternating between the VMMs of --vmm (default cabin,qemu: QEMU -M
microvm in the same run tells a fault of the environment from one of cabin's).
Every guest boots the project kernel on the busybox root image (shared,
read-only) with --vcpus vCPUs, and runs one script:
  - disk: writes --disk-mib MiB of random data to a data disk of its own with
    O_DIRECT, reads it back and compares checksums;
  - network: brings up its virtio-net device on a TAP of its own (in a network
    namespace the soak creates; each TAP has a /30 of its own), waits for a
    first reply from the host end (at most 30 tries), then pings it --pings
    times with 1200-byte packets, and none may be lost;
then prints SOAK-OK and reboots. A guest fails when its VMM exits before SOAK-OK
or with a status other than 0, when the kernel panics, or after --timeout
seconds; every failure is reported with the VMM's exit, the last console lines
and the last stderr lines.

Output: the progress on stderr, then a Markdown report and a JSON document
between the lines
  ===== SOAK MARKDOWN BEGIN =====  ... ===== SOAK MARKDOWN END =====
  ===== SOAK JSON BEGIN =====      ... ===== SOAK JSON END =====
Exit status: 0 every guest passed, 1 some failed, 2 bad arguments or missing
inputs.

Python 3 standard library only; the VM launching and console helpers are
iobench.py's and bootbench.py's, imported.
"""

import argparse
import base64
import concurrent.futures
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # the repository (read-only in the sandbox) stays clean
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "bench"))
import bootbench as bb  # noqa: E402
import iobench as ib  # noqa: E402

MD_BEGIN = "===== SOAK MARKDOWN BEGIN ====="
MD_END = "===== SOAK MARKDOWN END ====="
JSON_BEGIN = "===== SOAK JSON BEGIN ====="
JSON_END = "===== SOAK JSON END ====="
SCHEMA = "cabin-soak/1"

VMMS = ("cabin", "qemu")
LABEL = {"cabin": "cabin", "qemu": "QEMU microvm"}
# QEMU's microvm has no i8042: its guests reboot by triple fault (-no-reboot
# makes that an exit). SOAK-OK before the exit is what tells a pass. No `quiet`:
# the kernel's messages are what a failure report needs.
CMDLINE = {
    "cabin": "console=ttyS0 reboot=k panic=-1 root=/dev/vda ro rootfstype=ext4",
    "qemu": "console=ttyS0 reboot=t panic=-1 root=/dev/vda ro rootfstype=ext4",
}
OK = b"SOAK-OK"
NETNS_PREFIX = "cabin-soak"
TAIL_LINES = 25


def log(msg):
    stamp = time.strftime("%H:%M:%S")
    sys.stderr.write(f"soak {stamp} {msg}\n")
    sys.stderr.flush()


def addresses(index):
    """(host, guest) addresses of guest INDEX's /30."""
    net = f"10.{100 + index // 64}.{index % 64 * 4}"
    return f"{net}.1", f"{net}.2"


def guest_script(a, index):
    return (
        f"M={a.disk_mib};D=\n"
        + ib.find_data_disk(a.disk_mib)
        + "[ -n \"$D\" ]||{ echo SOAK-FAIL no data disk;exit 2;}\n"
        "dd if=/dev/urandom of=/tmp/w bs=64k count=$((M*16)) 2>/dev/null\n"
        "dd if=/tmp/w of=$D bs=64k oflag=direct conv=notrunc 2>/tmp/e||{ cat /tmp/e;exit 3;}\n"
        "dd if=$D of=/tmp/r bs=64k count=$((M*16)) iflag=direct 2>/tmp/e||{ cat /tmp/e;exit 4;}\n"
        "[ \"$(md5sum </tmp/w)\" = \"$(md5sum </tmp/r)\" ]||{ echo SOAK-FAIL disk data differs;exit 5;}\n"
        "echo SOAK-DISK-OK\n"
        f"ip link set eth0 up&&ip addr add {addresses(index)[1]}/30 dev eth0||exit 6\n"
        # Under load the first replies can wait on neighbour resolution, which gives
        # up after a few seconds and drops what it queued: resolve first.
        f"H={addresses(index)[0]};i=0;until ping -c 1 -W 5 $H >/dev/null 2>&1;do\n"
        "i=$((i+1));[ $i -lt 30 ]||{ echo SOAK-FAIL no ping reply;exit 8;};done\n"
        f"ping -c {a.pings} -i 0.1 -s 1200 -W 20 $H>/tmp/p 2>&1\n"
        "grep -q ' 0% packet loss' /tmp/p||{ tail -n 3 /tmp/p;echo SOAK-FAIL ping;exit 7;}\n"
        "echo SOAK-NET-OK\necho SOAK-OK\n"
    )


def argv_for(ctx, vmm, index, disk, tap):
    a = ctx.args
    script = guest_script(a, index)
    line = f"{CMDLINE[vmm]} cabin.sh={base64.b64encode(script.encode()).decode()}"
    if len(line) > ib.MAX_CMDLINE:
        raise bb.BenchError(f"guest command line too long ({len(line)} bytes)")
    make = ib.cabin_argv if vmm == "cabin" else ib.qemu_argv
    return make(ctx, [ctx.rootfs, disk], line, a.memory, a.vcpus, nets=[tap], root_readonly=True)


def tail(text, lines):
    return "\n".join(text.replace("\r", "").rstrip("\n").split("\n")[-lines:])


def stderr_of(vm):
    try:
        vm.errf.flush()
        vm.errf.seek(0)
        return vm.errf.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""


def classify(vmm, status, err, console):
    """A short name for a failure, from what the VMM and the guest said."""
    if status is None and OK.decode() in console:
        return "no exit after SOAK-OK (the guest's reboot hung)"
    if "triple fault" in err:
        return "triple fault"
    if "Kernel panic" in console:
        return "guest kernel panic"
    if "SOAK-FAIL" in console:
        m = re.search(r"SOAK-FAIL ([^\n]*)", console)
        return f"guest check failed: {m.group(1).strip() if m else '?'}"
    if status is None:
        return "timeout"
    if vmm == "qemu" and status == 0:
        return "guest reset before SOAK-OK (QEMU -no-reboot)"
    return f"exited before SOAK-OK ({bb._exit_text(status)})"


def run_guest(ctx, index):
    a = ctx.args
    vmm = a.vmms[index % len(a.vmms)]
    tap = f"soak{index}"
    disk = os.path.join(ctx.disk_dir, f"data-{index}.raw")
    with open(disk, "wb") as f:
        f.truncate(a.disk_mib << 20)
    ctx.ns.ip("tuntap", "add", "dev", tap, "mode", "tap")
    ctx.ns.ip("addr", "add", f"{addresses(index)[0]}/30", "dev", tap)
    ctx.ns.ip("link", "set", tap, "up")
    t0 = time.monotonic()
    rec = {"index": index, "vmm": vmm}
    try:
        vm = ib.Vm(argv_for(ctx, vmm, index, disk, tap), ctx.env[vmm], netns=ctx.ns.name)
        with vm:
            passed = True
            try:
                vm.console.wait_for(OK, t0 + a.timeout)
            except bb.BenchError:
                passed = False
            # The guest reboots after SOAK-OK; cabin (reset) and QEMU (-no-reboot)
            # then exit 0.
            status = vm.wait_exit(max(5.0, t0 + a.timeout - time.monotonic()))
            console = vm.console.text()
            err = stderr_of(vm)
        rec["seconds"] = round(time.monotonic() - t0, 1)
        rec["status"] = status
        if passed and status == 0:
            rec["ok"] = True
        else:
            rec["ok"] = False
            rec["kind"] = classify(vmm, status, err, console)
            rec["console_tail"] = tail(console, TAIL_LINES)
            rec["stderr_tail"] = tail(err, TAIL_LINES)
    finally:
        subprocess.run(["ip", "-n", ctx.ns.name, "link", "del", tap],
                       stderr=subprocess.DEVNULL, check=False)
        os.unlink(disk)
    return rec


def render_markdown(res):
    cfg = res["config"]
    env = res["environment"]
    out = [
        "## Soak: guests with disk and network traffic, many at once",
        "",
        f"{cfg['guests']} guests, at most {cfg['parallel']} at once, alternating "
        f"{', '.join(LABEL[v] for v in cfg['vmms'])}; each {cfg['vcpus']} vCPUs, "
        f"{cfg['memory']} MiB, {cfg['disk_mib']} MiB written and read back with O_DIRECT, "
        f"{cfg['pings']} pings of 1200 bytes over a TAP. Environment: {env['kind']} "
        f"({env['cpus']} CPUs, {env['host_cpu']}), commit {env['commit']}, {env['date_utc']}; "
        f"{res['wall_s']:.0f} s in all.",
        "",
        "| VMM | guests | passed | failed | failures by kind | median s per guest |",
        "|---|---|---|---|---|---|",
    ]
    for v in cfg["vmms"]:
        recs = [r for r in res["guests"] if r["vmm"] == v]
        failed = [r for r in recs if not r["ok"]]
        kinds = {}
        for r in failed:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        kind_text = "; ".join(f"{k}: {n}" for k, n in sorted(kinds.items())) or "–"
        secs = sorted(r["seconds"] for r in recs if r["ok"])
        med = f"{secs[len(secs) // 2]:.0f}" if secs else "–"
        out.append(f"| {LABEL[v]} | {len(recs)} | {len(recs) - len(failed)} | {len(failed)} "
                   f"| {kind_text} | {med} |")
    failures = [r for r in res["guests"] if not r["ok"]]
    if failures:
        out += ["", "### Failures", ""]
        for r in failures:
            out += [f"#### guest {r['index']} ({LABEL[r['vmm']]}): {r['kind']}, "
                    f"{bb._exit_text(r['status'])} after {r['seconds']} s", "",
                    "```", "console:", r["console_tail"], "stderr:", r["stderr_tail"], "```", ""]
    return "\n".join(out) + "\n"


def parse_args(argv):
    repo = os.path.dirname(os.path.dirname(HERE))
    p = argparse.ArgumentParser(description="Boot many guests with disk and network traffic.")
    p.add_argument("--guests", type=int, default=100, help="guests in all (default 100)")
    p.add_argument("--parallel", type=int, default=30, help="most guests at once (default 30)")
    p.add_argument("--vmm", default="cabin,qemu", help="VMMs, alternating (default cabin,qemu)")
    p.add_argument("--vcpus", type=int, default=2)
    p.add_argument("--memory", type=int, default=96, help="MiB per guest (default 96)")
    p.add_argument("--disk-mib", type=int, default=8, help="data written per guest (default 8)")
    p.add_argument("--pings", type=int, default=20)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per guest (default 900)")
    p.add_argument("--cabin", default=os.path.join(repo, "target", "release", "cabin"))
    p.add_argument("--qemu", default=shutil.which("qemu-system-x86_64") or "qemu-system-x86_64")
    p.add_argument("--qemu-machine", default="microvm,acpi=on,rtc=off")
    p.add_argument("--kernel", default=os.environ.get("CABIN_VMLINUX"))
    p.add_argument("--rootfs", default=os.environ.get("CABIN_ROOTFS"))
    p.add_argument("--environment", default="direct")
    p.add_argument("--host-cpu", default=None)
    p.add_argument("--commit", default="")
    a = p.parse_args(argv)
    a.vmms = [v.strip() for v in a.vmm.split(",") if v.strip()]
    if not a.vmms or any(v not in VMMS for v in a.vmms) or len(set(a.vmms)) != len(a.vmms):
        p.error(f"--vmm takes cabin and/or qemu, not {a.vmm!r}")
    for name in ("guests", "parallel", "vcpus", "memory", "disk_mib", "pings"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.guests > 1024:
        p.error("--guests: at most 1024 (a /30 each in 10.100.0.0 to 10.115.255.255)")
    if a.disk_mib == 32:
        p.error("--disk-mib 32 is the root image's size: the guest finds the data disk by size")
    for name, path in (("--kernel ($CABIN_VMLINUX)", a.kernel), ("--rootfs ($CABIN_ROOTFS)", a.rootfs)):
        if not path or not os.path.isfile(path):
            p.error(f"{name}: {path!r} is not a file")
    return a


def main(argv):
    a = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    bins = {"cabin": shutil.which(a.cabin), "qemu": shutil.which(a.qemu)}
    for v in a.vmms:
        if not bins[v]:
            log(f"error: the {v} binary ({a.cabin if v == 'cabin' else a.qemu}) is missing")
            return 2
    if not os.path.exists("/dev/net/tun"):
        log("error: no /dev/net/tun: the guests' TAP devices need it")
        return 2
    ctx = ib.Context()
    ctx.args = a
    scratch = tempfile.mkdtemp(prefix="soak-")
    ctx.scratch = scratch
    ctx.disk_dir = os.path.join(scratch, "disks")
    os.makedirs(ctx.disk_dir)
    ctx.env = {v: dict(os.environ) for v in VMMS}
    ctx.bin = dict(bins)
    ctx.ns = None
    try:
        ctx.kernel = bb.stage_file(os.path.abspath(a.kernel), os.path.join(scratch, "guest"))
        ctx.rootfs = bb.stage_file(os.path.abspath(a.rootfs), os.path.join(scratch, "guest"))
        for v in a.vmms:
            ctx.bin[v], extra = ib.stage_binary(v, bins[v], scratch)
            ctx.env[v].update(extra)
        ib.NETNS_PREFIX = NETNS_PREFIX
        ctx.ns = ib.Netns()
    except (OSError, bb.BenchError) as e:
        if ctx.ns:
            ctx.ns.close()
        shutil.rmtree(scratch, ignore_errors=True)
        log(f"error: cannot set up: {e}")
        return 2

    log(f"{a.guests} guests, at most {a.parallel} at once, VMMs {','.join(a.vmms)}")
    results = []
    lock = threading.Lock()
    t_start = time.monotonic()

    def one(index):
        try:
            rec = run_guest(ctx, index)
        except (OSError, bb.BenchError, subprocess.SubprocessError) as e:
            rec = {"index": index, "vmm": a.vmms[index % len(a.vmms)], "ok": False,
                   "kind": f"could not run: {e}", "status": None, "seconds": 0,
                   "console_tail": "", "stderr_tail": ""}
        with lock:
            results.append(rec)
            done = len(results)
        verdict = "ok" if rec["ok"] else f"FAILED ({rec['kind']})"
        log(f"[{done}/{a.guests}] guest {index} {rec['vmm']}: {verdict} in {rec['seconds']} s")
        return rec

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=a.parallel) as pool:
            list(pool.map(one, range(a.guests)))
    finally:
        ctx.ns.close()
        shutil.rmtree(scratch, ignore_errors=True)

    results.sort(key=lambda r: r["index"])
    res = {
        "schema": SCHEMA,
        "environment": {
            "kind": a.environment,
            "host_cpu": a.host_cpu or bb.cpu_model(),
            "cpus": os.cpu_count(),
            "kernel_release": platform.release(),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": a.commit,
        },
        "config": {
            "guests": a.guests, "parallel": a.parallel, "vmms": a.vmms, "vcpus": a.vcpus,
            "memory": a.memory, "disk_mib": a.disk_mib, "pings": a.pings, "timeout": a.timeout,
            "qemu_machine": a.qemu_machine, "cmdline": CMDLINE,
        },
        "wall_s": time.monotonic() - t_start,
        "guests": results,
    }
    md = render_markdown(res)
    sys.stderr.flush()
    sys.stdout.write(f"{MD_BEGIN}\n{md}{MD_END}\n")
    sys.stdout.write(f"{JSON_BEGIN}\n{json.dumps(res, indent=1)}\n{JSON_END}\n")
    sys.stdout.flush()
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
