#!/usr/bin/env python3
"""A distribution's own kernel, booted to systemd's multi-user target and
powered off: cabin against QEMU -M microvm with ACPI.

Each round boots, interleaved (cabin, QEMU, cabin, QEMU, ...), the same
guest: Debian's packaged kernel (`vmlinuz`, a bzImage, untouched) with the
initramfs Debian's initramfs-tools made, root filesystem the project's
Debian image (a fresh copy per boot) on the first virtio block device,
2 vCPUs, 512 MiB. The kernel has virtio-mmio only as a module and only
finds devices that ACPI describes, so both VMMs describe them in ACPI
(QEMU: `-M microvm,acpi=on`). Per boot:

  boot_s         from just before the VMM is spawned to the line
                 `CABIN-DEBIAN-STATE=<state>` on its console (the image's
                 marker unit prints it once `systemctl is-system-running
                 --wait` returns);
  guest_uptime_s the guest's own /proc/uptime at that moment;
  poweroff_s     from typing `systemctl poweroff` into the serial console's
                 autologin shell (after its prompt showed) to the VMM's exit,
                 which must be with status 0.

Results as bootbench.py and iobench.py print them: a Markdown table and a JSON
document between marker lines. Exit status: 0 every boot succeeded, 1 some
failed (the table is still printed, failures listed), 2 bad arguments.

Python 3 standard library only; the VMM process, console and staging helpers
are iobench.py's and bootbench.py's, imported.
"""

import argparse
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
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # the repository (read-only in the sandbox) stays clean
sys.path.insert(0, HERE)
import bootbench as bb  # noqa: E402  (staging, summaries, table cells)
import iobench as iob  # noqa: E402  (VMM process with a console, staging)

MD_BEGIN = "===== DISTROBENCH MARKDOWN BEGIN ====="
MD_END = "===== DISTROBENCH MARKDOWN END ====="
JSON_BEGIN = "===== DISTROBENCH JSON BEGIN ====="
JSON_END = "===== DISTROBENCH JSON END ====="
SCHEMA = "cabin-distrobench/1"

VMMS = ("cabin", "qemu")
LABEL = {"cabin": "cabin", "qemu": "QEMU microvm (ACPI)"}
# No reboot= needed: the guest powers off through ACPI in both VMMs.
CMDLINE = "console=ttyS0 panic=-1 quiet root=/dev/vda rw"
MEMORY_MIB = 512
VCPUS = 2

STATE_MARKER = b"CABIN-DEBIAN-STATE="
UPTIME_RE = re.compile(r"CABIN-DEBIAN-UPTIME=([0-9.]+)")
# bash's prompt for root in Debian's default /root/.bashrc: "<host>:<dir># ".
PROMPT = b"cabin-debian:~# "
POWEROFF = b"systemctl poweroff\n"
MAX_CONSECUTIVE_FAILURES = 2

ROWS = [
    ("boot_s", "Launch → `CABIN-DEBIAN-STATE=` on the console (s)", "{:.2f}"),
    ("guest_uptime_s", "Guest uptime at that moment (s)", "{:.2f}"),
    ("poweroff_s", "`systemctl poweroff` typed → VMM exited with 0 (s)", "{:.2f}"),
]


def log(msg):
    print(f"distrobench: {msg}", file=sys.stderr, flush=True)


def vmm_argv(ctx, vmm, image):
    a = ctx.args
    if vmm == "cabin":
        return [ctx.bin["cabin"], "run", "--kernel", ctx.kernel, "--initrd", ctx.initrd,
                "--memory", str(MEMORY_MIB), "--vcpus", str(VCPUS), "--cmdline", CMDLINE,
                "--disk", f"path={image}"]
    return [ctx.bin["qemu"], "-M", a.qemu_machine, "-enable-kvm", "-cpu", "host",
            "-m", str(MEMORY_MIB), "-smp", str(VCPUS),
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-serial", "stdio", "-kernel", ctx.kernel, "-initrd", ctx.initrd,
            "-append", CMDLINE,
            "-drive", f"id=root,file={image},format=raw,if=none",
            "-device", "virtio-blk-device,drive=root"]


def boot_once(ctx, vmm):
    """One boot to the multi-user marker and a poweroff; returns the sample."""
    a = ctx.args
    image = bb.stage_file(a.image, os.path.join(ctx.scratch, f"image-{vmm}"))
    try:
        argv = vmm_argv(ctx, vmm, image)
        ctx.argv[vmm] = argv
        with iob.Vm(argv, ctx.env[vmm]) as vm:
            deadline = vm.t_spawn + a.timeout
            try:
                t_state, state, _ = vm.console.wait_line(STATE_MARKER, deadline)
                vm.console.wait_for(PROMPT, deadline)
            except iob.BenchError as e:
                raise iob.BenchError(f"{e}{vm.details()}") from e
            m = UPTIME_RE.search(vm.console.text())
            t_off = time.monotonic()
            vm.proc.stdin.write(POWEROFF)
            vm.proc.stdin.flush()
            rc = vm.wait_exit(a.poweroff_timeout)
            t_exit = time.monotonic()
            if rc is None:
                raise iob.BenchError(f"no exit within {a.poweroff_timeout:.0f} s of"
                                    f" `systemctl poweroff`{vm.details()}")
            if rc != 0:
                raise iob.BenchError(f"exit status {rc} after `systemctl poweroff`{vm.details()}")
    finally:
        os.unlink(image)
    return {"boot_s": t_state - vm.t_spawn, "state": state,
            "guest_uptime_s": float(m.group(1)) if m else None,
            "poweroff_s": t_exit - t_off}


def render_markdown(res):
    env, cfg, rec = res["environment"], res["config"], res["boots"]
    summary = rec["summary"]
    vmms = cfg["vmms"]
    L = [f"# A distribution's kernel to the multi-user target: {' vs '.join(LABEL[v] for v in vmms)}",
         "",
         f"{env['kind']}, {env['host_cpu']}, {env['cpus']} CPUs, {env['date_utc']},"
         f" commit {env['commit'] or '?'}; kernel {cfg['kernel_version'] or cfg['kernel']},"
         f" initrd from initramfs-tools, Debian image on /dev/vda, {VCPUS} vCPUs,"
         f" {MEMORY_MIB} MiB; QEMU `-M {cfg['qemu_machine']}`; {cfg['runs']} round(s),"
         " interleaved; median (min–max)."]
    if env["kind"] != "direct":
        L += ["", "Nested numbers are not hardware numbers: compare the ratios."]
    header = ["Metric"] + [LABEL[v] for v in vmms]
    if vmms == ["cabin", "qemu"]:
        header.append("cabin/QEMU")
    rows = []
    for key, label, fmt in ROWS:
        row = [label] + [iob.cell(summary, v, key, fmt) for v in vmms]
        if vmms == ["cabin", "qemu"]:
            row.append(iob.ratio(summary, "cabin", "qemu", key))
        rows.append(row)
    L += [""] + iob.md_table(header, rows)
    states = {v: sorted({s.get("state") for s in rec["samples"].get(v, [])}) for v in vmms}
    L += ["", "systemd states: " + "; ".join(f"{LABEL[v]} {', '.join(map(str, s)) or '–'}"
                                             for v, s in states.items())]
    L += ["", "Command lines:"] + [f"- {LABEL[v]}: `{' '.join(cfg['argv'].get(v, []))}`"
                                   for v in vmms]
    if res["failures"]:
        L += ["", "Failed measurements:"]
        for f in res["failures"]:
            first = f["error"].splitlines()[0] if f["error"] else "?"
            L.append(f"- {LABEL.get(f['who'], f['who'])} #{f['index'] + 1}: {first}")
    return "\n".join(L) + "\n"


def parse_args(argv):
    repo = os.path.dirname(os.path.dirname(HERE))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--quick", action="store_true", help="one round")
    p.add_argument("--vmm", default="cabin,qemu", help="VMMs, in interleaving order")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds from launch to the marker and the prompt (default 900)")
    p.add_argument("--poweroff-timeout", type=float, default=300.0)
    p.add_argument("--cabin", default=os.path.join(repo, "target", "release", "cabin"))
    p.add_argument("--qemu", default=shutil.which("qemu-system-x86_64") or "qemu-system-x86_64")
    p.add_argument("--qemu-machine", default="microvm,acpi=on,rtc=off",
                   help="QEMU -M value (default microvm,acpi=on,rtc=off: ACPI describes the"
                        " virtio-mmio devices; no CMOS RTC, like cabin)")
    p.add_argument("--kernel", default=os.environ.get("CABIN_DEBIAN_VMLINUZ"))
    p.add_argument("--initrd", default=os.environ.get("CABIN_DEBIAN_INITRD"))
    p.add_argument("--image", default=os.environ.get("CABIN_DEBIAN_ROOTFS"))
    p.add_argument("--no-stage", dest="stage", action="store_false",
                   help="run the VMMs from where they are (not copied to a tmpfs)")
    p.add_argument("--environment", default="direct")
    p.add_argument("--host-cpu", default=None)
    p.add_argument("--commit", default="")
    a = p.parse_args(argv)
    if a.quick:
        a.runs = 1
    if a.runs < 1:
        p.error("--runs must be at least 1")
    a.vmms = [v.strip() for v in a.vmm.split(",") if v.strip()]
    if not a.vmms or any(v not in VMMS for v in a.vmms) or len(set(a.vmms)) != len(a.vmms):
        p.error(f"--vmm takes cabin and/or qemu, not {a.vmm!r}")
    for name, path in (("--kernel ($CABIN_DEBIAN_VMLINUZ)", a.kernel),
                       ("--initrd ($CABIN_DEBIAN_INITRD)", a.initrd),
                       ("--image ($CABIN_DEBIAN_ROOTFS)", a.image)):
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
            log(f"error: {v} binary {a.cabin if v == 'cabin' else a.qemu} is missing")
            return 2
    ctx = iob.Context()
    ctx.args = a
    ctx.scratch = tempfile.mkdtemp(prefix="distrobench-")
    ctx.env = {v: dict(os.environ) for v in VMMS}
    ctx.bin = dict(bins)
    ctx.argv = {}
    rec = {"samples": {v: [] for v in a.vmms}}
    failures = []
    try:
        try:
            guest = os.path.join(ctx.scratch, "guest")
            ctx.kernel = bb.stage_file(os.path.abspath(a.kernel), guest)
            ctx.initrd = bb.stage_file(os.path.abspath(a.initrd), guest)
            if a.stage:
                for v in a.vmms:
                    ctx.bin[v], extra = iob.stage_binary(v, bins[v], ctx.scratch)
                    ctx.env[v].update(extra)
        except (OSError, iob.BenchError) as e:
            log(f"error: cannot stage the inputs in {ctx.scratch}: {e}")
            return 2
        consecutive = {v: 0 for v in a.vmms}
        for i in range(a.runs):
            for v in a.vmms:
                if consecutive[v] >= MAX_CONSECUTIVE_FAILURES:
                    continue
                t0 = time.monotonic()
                try:
                    s = boot_once(ctx, v)
                except (iob.BenchError, OSError, subprocess.SubprocessError) as e:
                    log(f"FAILED: {v} #{i + 1}: {e}")
                    failures.append({"who": v, "index": i, "error": str(e)})
                    consecutive[v] += 1
                    continue
                consecutive[v] = 0
                rec["samples"][v].append(s)
                brief = {k: (round(x, 3) if isinstance(x, float) else x) for k, x in s.items()}
                log(f"{v} #{i + 1} ({time.monotonic() - t0:.0f} s): {json.dumps(brief)}")
    finally:
        shutil.rmtree(ctx.scratch, ignore_errors=True)
    iob.summarize_section(rec, [k for k, _, _ in ROWS])
    kver = os.path.join(os.path.dirname(os.path.abspath(a.kernel)), "kernel-version")
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
            "vmms": a.vmms, "runs": a.runs, "qemu_machine": a.qemu_machine,
            "kernel": os.path.abspath(a.kernel), "initrd": os.path.abspath(a.initrd),
            "kernel_version": open(kver).read().strip() if os.path.isfile(kver) else None,
            "image": os.path.abspath(a.image), "cmdline": CMDLINE, "argv": ctx.argv,
            "memory_mib": MEMORY_MIB, "vcpus": VCPUS, "staged": a.stage,
        },
        "boots": rec,
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
