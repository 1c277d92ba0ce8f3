#!/usr/bin/env python3
"""`cabin exec` and vsock benchmark: command round trips and stream throughput.

Run by resources/bench/exec.sh, directly where cabin's `check` says guests boot
natively, else inside the nested sandbox.

The guest: the project kernel and the busybox ext4 image as /dev/vda
(read-only), 1 vCPU, --memory MiB, a virtio-vsock device (context id 3, its
Unix socket in the scratch directory) and a virtio-net interface on a TAP in a
network namespace made here (iobench.py's Netns: the host side is 10.79.0.1,
the guest 10.79.0.2), started over its API socket (`cabin ctl start`). The
image's init starts cabin-agent (vsock port 10789) and runs the script

  ip link set eth0 up && ip addr add 10.79.0.2/24 dev eth0; echo GUEST-UP; exec sleep ...

The container: a crun container of containers.py's bundle (the same image's
tree, read-only, 1 CPU, a --memory limit) running `echo GUEST-UP; exec sleep`.

Each round (--rounds) starts a fresh guest and a fresh container, then:
  first       the first `cabin exec --api-sock S -- true` once the console
              said the agent listens (and the guest printed GUEST-UP); the
              first `crun exec CID true` once the container printed GUEST-UP.
  exec        this round's share of --execs runs of each, alternating (which
              one goes first alternates too): `cabin exec --api-sock S -- true`
              and `crun exec CID true`, stdin /dev/null; the wall time of the
              whole client process, spawn to exit (the exit is seen by a
              thread blocked in waitpid: no polling interval in the figure).
  throughput  --mib MiB each way, the four in an order rotating per round:
    vsock host->guest  the host's busybox `head -c BYTES /dev/zero |
                       cabin exec -- sh -c 'cat >/dev/null'`
    vsock guest->host  `cabin exec -- head -c BYTES /dev/zero`, stdout /dev/null
    TCP host->guest    in the guest `cabin exec -- sh -c 'nc -l -p P >/dev/null'`
                       (started before the clock, its stdin held open, until
                       the guest's socket table shows it listening); then, in
                       the namespace, the host's busybox
                       `head -c BYTES /dev/zero | nc 10.79.0.2 P`
    TCP guest->host    in the namespace the host's busybox `nc -l -p P` to
                       /dev/null (started before the clock, stdin held open);
                       then `cabin exec -- sh -c 'head -c BYTES /dev/zero | nc 10.79.0.1 P'`
    Each is timed from the sender's spawn to the exit of both ends (the
    receiver has read everything); MB/s = bytes / 10^6 / seconds. Every
    transfer but TCP host->guest includes the start of one `cabin exec`.

Output: Markdown and JSON between marker lines on stdout (exec.sh cuts them
out):
  ===== EXECBENCH MARKDOWN BEGIN ===== ... ===== EXECBENCH MARKDOWN END =====
  ===== EXECBENCH JSON BEGIN =====     ... ===== EXECBENCH JSON END =====

Exit status: 0 every measurement succeeded, 1 some failed (the tables are still
printed, with the failures listed), 2 bad arguments or missing inputs.

Python 3 standard library only; the console, network namespace, staging, crun
and summary helpers are iobench.py's, bootbench.py's, containers.py's and
snapbench.py's, imported.
"""

import argparse
import base64
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # the repository (read-only in the sandbox) stays clean
sys.path.insert(0, HERE)
import bootbench as bb  # noqa: E402
import containers as cb  # noqa: E402
import iobench as ib  # noqa: E402
import snapbench as sb  # noqa: E402

MD_BEGIN = "===== EXECBENCH MARKDOWN BEGIN ====="
MD_END = "===== EXECBENCH MARKDOWN END ====="
JSON_BEGIN = "===== EXECBENCH JSON BEGIN ====="
JSON_END = "===== EXECBENCH JSON END ====="
SCHEMA = "cabin-execbench/1"

AGENT_READY = b"cabin-agent: listening on vsock port 10789"
UP = b"GUEST-UP"
NET_FAILED = "NET-FAILED"
GUEST_CID = 3
SLEEP = "exec sleep 1000000\n"
GUEST_SCRIPT = (f"ip link set eth0 up&&ip addr add {ib.GUEST_IP}/{ib.PREFIX} dev eth0"
                f"||echo {NET_FAILED}\necho GUEST-UP\n" + SLEEP)
CONTAINER_SCRIPT = "echo GUEST-UP\n" + SLEEP
CMDLINE = cb.CMDLINE["cabin"]
PORT_BASE = 5201
MIB = 1 << 20
MB = 1e6
LISTEN_TIMEOUT_S = 60.0
# (transport, direction), the order of the first round.
TRANSFERS = (("vsock", "h2g"), ("vsock", "g2h"), ("tcp", "h2g"), ("tcp", "g2h"))
# After this many failures in a row a kind of measurement is not tried again (a
# transfer that stalls costs its whole timeout).
MAX_CONSECUTIVE_FAILURES = 2
TAIL_BYTES = 2000


def log(msg):
    print(f"execbench: {msg}", file=sys.stderr, flush=True)


BenchError = bb.BenchError


class Context:
    pass


# --- one end of a transfer, or one exec -------------------------------------------


class Stream:
    """A client process: stdin held open as a pipe never written until
    close_stdin() (hold), or /dev/null; stdout /dev/null; stderr to a file. In
    a session of its own, so that a shell pipeline's children go with it. A
    thread blocked in waitpid notes the exit time, so that it carries no
    polling interval."""

    def __init__(self, argv, env, hold=False):
        self.argv = argv
        self.t_exit = None
        self.errf = tempfile.TemporaryFile(prefix="execbench-stderr-")
        stdin = subprocess.PIPE if hold else subprocess.DEVNULL
        self.t_spawn = time.monotonic()
        try:
            self.proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.DEVNULL,
                                         stderr=self.errf, env=env, close_fds=True,
                                         start_new_session=True)
        except OSError as e:
            self.errf.close()
            raise BenchError(f"cannot start {argv[0]}: {e}") from e
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()

    def _wait(self):
        self.proc.wait()
        self.t_exit = time.monotonic()

    def close_stdin(self):
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass

    def stderr_tail(self):
        try:
            self.errf.flush()
            self.errf.seek(0)
            return self.errf.read()[-TAIL_BYTES:].decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    def finish(self, deadline, what):
        """Wait for the exit until DEADLINE; BenchError unless it exited 0.
        Returns the seconds from spawn to exit."""
        self._waiter.join(max(0.0, deadline - time.monotonic()))
        if self._waiter.is_alive():
            tail = self.stderr_tail()
            self.stop()
            raise BenchError(f"{what}: not done within {deadline - self.t_spawn:g} s "
                             f"(stderr: {tail!r})")
        rc = self.proc.returncode
        if rc != 0:
            raise BenchError(f"{what}: {bb._exit_text(rc)}: {self.stderr_tail()}")
        return self.t_exit - self.t_spawn

    def stop(self):
        """Kill what is left of its session (a pipeline's children may outlive
        the shell); reap it."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass  # the whole session has exited
        self._waiter.join(30)
        self.close_stdin()
        self.errf.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def timed(argv, env, what, timeout):
    """Seconds from spawn to exit of ARGV, stdin /dev/null; BenchError unless 0."""
    with Stream(argv, env) as s:
        return s.finish(s.t_spawn + timeout, what)


# --- the guest and the container ---------------------------------------------------------


def guest_argv(ctx, sock, uds):
    line = f"{CMDLINE} cabin.sh={base64.b64encode(GUEST_SCRIPT.encode()).decode()}"
    argv = ib.cabin_argv(ctx, [ctx.rootfs], line, ctx.args.memory, 1, nets=[ib.TAP],
                         root_readonly=True)
    return argv + ["--vsock", f"cid={GUEST_CID},path={uds}", "--api-sock", sock]


def boot_guest(ctx, ns, rnd):
    """A cabin guest in the namespace, started over its API; its ib.Vm (with
    .sock, the API socket) once the agent listens and the script ran."""
    d = os.path.join(ctx.scratch, f"round-{rnd}")
    os.makedirs(d, exist_ok=True)
    sock, uds = os.path.join(d, "api.sock"), os.path.join(d, "vsock.sock")
    vm = ib.Vm(guest_argv(ctx, sock, uds), ctx.env["cabin"], netns=ns.name)
    vm.sock = sock

    def body():
        ib.wait_path(sock, vm)
        deadline = time.monotonic() + ctx.args.timeout
        sb.ctl(ctx, sock, "start")
        vm.console.wait_for(AGENT_READY, deadline)
        vm.console.wait_for(UP, deadline)
        if NET_FAILED in vm.console.text():
            raise BenchError("the guest could not configure eth0")
    try:
        sb.checked(vm, body)
    except BaseException:
        vm.stop()
        raise
    return vm


def start_container(ctx):
    vm = cb.crun_launch(ctx, CONTAINER_SCRIPT, ctx.args.memory)
    try:
        sb.checked(vm, lambda: vm.console.wait_for(UP, vm.t_spawn + ctx.args.timeout))
    except BaseException:
        stop_container(ctx, vm)
        raise
    return vm


def stop_container(ctx, vm):
    cb.stop(ctx, vm)
    shutil.rmtree(vm.bundle, ignore_errors=True)


def cabin_exec_argv(ctx, guest, *cmd):
    return [ctx.bin["cabin"], "exec", "--api-sock", guest.sock, "--", *cmd]


def crun_exec_argv(ctx, container, *cmd):
    return [ctx.bin["crun"], "--root", ctx.crun_root, "exec", container.container_id, *cmd]


def cabin_true_ms(ctx, guest):
    return timed(cabin_exec_argv(ctx, guest, "true"), ctx.env["cabin"], "cabin exec -- true",
                 ctx.args.exec_timeout) * 1000.0


def crun_true_ms(ctx, container):
    return timed(crun_exec_argv(ctx, container, "true"), ctx.env["crun"], "crun exec true",
                 ctx.args.exec_timeout) * 1000.0


# --- throughput -----------------------------------------------------------------------------


def wait_listening(what, listener, check, timeout=LISTEN_TIMEOUT_S):
    """Poll CHECK() until it is true; BenchError when LISTENER exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not check():
        if listener.proc.poll() is not None:
            raise BenchError(f"{what} exited before listening "
                             f"({bb._exit_text(listener.proc.returncode)}): "
                             f"{listener.stderr_tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"{what} does not listen after {timeout:.0f} s")
        time.sleep(0.05)  # polling the socket table, bounded by the deadline


def guest_listening(ctx, guest, port):
    r = subprocess.run(cabin_exec_argv(ctx, guest, "cat", "/proc/net/tcp"),
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, env=ctx.env["cabin"],
                       timeout=ctx.args.exec_timeout, check=False)
    return r.returncode == 0 and ib.tcp_listening(r.stdout.decode("utf-8", "replace"), port)


def mb_per_s(nbytes, seconds):
    return nbytes / MB / seconds


def vsock_h2g(ctx, guest, nbytes, _ns, _port):
    # Fed by the host's busybox head, as the TCP sender is.
    bbx = ctx.bin["busybox"]
    exec_argv = shlex.join(cabin_exec_argv(ctx, guest, "sh", "-c", "cat >/dev/null"))
    argv = [bbx, "sh", "-c", f"{bbx} head -c {nbytes} /dev/zero | {exec_argv}"]
    with Stream(argv, ctx.env["cabin"]) as s:
        return mb_per_s(nbytes, s.finish(s.t_spawn + ctx.args.transfer_timeout,
                                         "vsock host->guest"))


def vsock_g2h(ctx, guest, nbytes, _ns, _port):
    argv = cabin_exec_argv(ctx, guest, "head", "-c", str(nbytes), "/dev/zero")
    with Stream(argv, ctx.env["cabin"]) as s:
        return mb_per_s(nbytes, s.finish(s.t_spawn + ctx.args.transfer_timeout,
                                         "vsock guest->host"))


def both_ends(ctx, sender, receiver):
    """Wait for the sender, then the receiver (its held stdin closed once the
    sender is done); seconds from the sender's spawn to the later exit."""
    deadline = sender.t_spawn + ctx.args.transfer_timeout
    sender.finish(deadline, f"sender {' '.join(sender.argv[-3:])}")
    receiver.close_stdin()
    receiver.finish(deadline, f"receiver {' '.join(receiver.argv[-3:])}")
    return max(sender.t_exit, receiver.t_exit) - sender.t_spawn


def tcp_h2g(ctx, guest, nbytes, ns, port):
    bbx = ctx.bin["busybox"]
    listen = cabin_exec_argv(ctx, guest, "sh", "-c", f"nc -l -p {port} >/dev/null")
    with Stream(listen, ctx.env["cabin"], hold=True) as receiver:
        wait_listening("the guest's nc -l", receiver, lambda: guest_listening(ctx, guest, port))
        send = ns.exec_argv(bbx, "sh", "-c",
                            f"{bbx} head -c {nbytes} /dev/zero | {bbx} nc {ib.GUEST_IP} {port}")
        with Stream(send, ctx.env["host"]) as sender:
            return mb_per_s(nbytes, both_ends(ctx, sender, receiver))


def tcp_g2h(ctx, guest, nbytes, ns, port):
    bbx = ctx.bin["busybox"]
    with Stream(ns.exec_argv(bbx, "nc", "-l", "-p", str(port)), ctx.env["host"],
                hold=True) as receiver:
        wait_listening("the host's nc -l", receiver, lambda: ns.listening(port))
        send = cabin_exec_argv(ctx, guest, "sh", "-c",
                               f"head -c {nbytes} /dev/zero | nc {ib.HOST_IP} {port}")
        with Stream(send, ctx.env["cabin"]) as sender:
            return mb_per_s(nbytes, both_ends(ctx, sender, receiver))


TRANSFER_FN = {("vsock", "h2g"): vsock_h2g, ("vsock", "g2h"): vsock_g2h,
               ("tcp", "h2g"): tcp_h2g, ("tcp", "g2h"): tcp_g2h}


# --- output ----------------------------------------------------------------------------------


def stats(values):
    """Median, p99 (nearest rank), min, max and n; None without values."""
    if not values:
        return None
    s = bb.summarize(values)
    s["p99"] = bb.percentile(sorted(values), 99)
    return s


def ms_row(label, s):
    if s is None:
        return f"| {label} | – | – | – | 0 |"
    return (f"| {label} | {s['median']:.1f} | {s['p99']:.1f} | "
            f"{s['min']:.1f}–{s['max']:.1f} | {s['n']} |")


def mbs_cell(s):
    if s is None:
        return "–"
    return f"{s['median']:.1f} ({s['min']:.1f}–{s['max']:.1f}, n={s['n']})"


def ratio_of(a, b, key="median"):
    if not a or not b or not b[key]:
        return "–"
    return f"{a[key] / b[key]:.2f}"


def render_markdown(res):
    env, cfg, sm = res["environment"], res["config"], res["summary"]
    lines = ["## cabin exec and vsock", "", bb.environment_line(env)]
    if env["kind"] != "direct":
        lines.append("Measured inside the nested sandbox (QEMU TCG with nested KVM): **these are "
                     "not hardware numbers**; absolute times there are 10-50x hardware and swing "
                     "with host load: compare the rows of one run with each other.")
    lines += [
        "",
        f"Guest: project kernel + busybox image (read-only), 1 vCPU, {cfg['memory']} MiB, "
        f"virtio-vsock (cid {GUEST_CID}) and virtio-net on a TAP; its init starts cabin-agent. "
        f"Container: crun, the same image's tree, 1 CPU, {cfg['memory']} MiB limit. "
        f"{cfg['rounds']} round(s), each with a fresh guest and container; in each, execs "
        "alternating cabin/crun, then the transfers in a rotating order.",
        "",
        f"### Exec round trip: spawn to exit of the client (ms; {cfg['execs']} of each in all)",
        "",
        "| Command | median | p99 | min–max | n |",
        "|---|---|---|---|---|",
        ms_row("`cabin exec --api-sock S -- true` (booted guest)", sm.get("cabin_exec_ms")),
        ms_row("`crun exec CID true` (running container)", sm.get("crun_exec_ms")),
        ms_row("first `cabin exec` after the agent listens (one per round)",
               sm.get("cabin_first_ms")),
        ms_row("first `crun exec` after the container started (one per round)",
               sm.get("crun_first_ms")),
        "",
        "| Ratio | value |",
        "|---|---|",
        f"| cabin exec / crun exec, medians | "
        f"{ratio_of(sm.get('cabin_exec_ms'), sm.get('crun_exec_ms'))} |",
        f"| cabin exec / crun exec, p99 | "
        f"{ratio_of(sm.get('cabin_exec_ms'), sm.get('crun_exec_ms'), 'p99')} |",
        f"| first cabin exec / later ones, medians | "
        f"{ratio_of(sm.get('cabin_first_ms'), sm.get('cabin_exec_ms'))} |",
        "",
        f"### Throughput: {cfg['mib']} MiB per transfer (MB/s = 10^6 bytes/s: median over "
        "the rounds (min–max, n rounds that succeeded))",
        "",
        "| Direction | vsock (`cabin exec` stdin/stdout) | TCP (virtio-net, busybox nc) | "
        "vsock / TCP |",
        "|---|---|---|---|",
    ]
    for d, label in (("h2g", "host → guest"), ("g2h", "guest → host")):
        v, t = sm.get(f"vsock_{d}_mbs"), sm.get(f"tcp_{d}_mbs")
        lines.append(f"| {label} | {mbs_cell(v)} | {mbs_cell(t)} | {ratio_of(v, t)} |")
    lines += ["", "Notes:"]
    lines += [f"- {n}" for n in res["notes"]]
    if res["failures"]:
        lines += ["", f"**{len(res['failures'])} failed measurement(s):**"]
        for f in res["failures"]:
            first = f["error"].splitlines()[0] if f["error"] else ""
            lines.append(f"- {f['what']}: {first}")
    return "\n".join(lines) + "\n"


# --- main ----------------------------------------------------------------------------------


def parse_args(argv):
    repo = os.path.dirname(os.path.dirname(HERE))
    p = argparse.ArgumentParser(description="cabin exec round trips and vsock throughput, "
                                            "against crun exec and TCP over virtio-net.")
    p.add_argument("--quick", action="store_true", help="--execs 30, --mib 32, --rounds 2")
    p.add_argument("--execs", type=int, default=200,
                   help="exec round trips of each, over all rounds (default 200)")
    p.add_argument("--mib", type=int, default=256, help="MiB per transfer (default 256)")
    p.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--memory", type=int, default=256, help="guest MiB and crun limit (default 256)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds a boot may take (default 300)")
    p.add_argument("--transfer-timeout", type=float, default=None,
                   help="seconds one transfer may take (default 60 + 1.5 per MiB: the "
                        "slowest seen, TCP guest->host in the nested sandbox, takes 0.4 per MiB)")
    p.add_argument("--exec-timeout", type=float, default=60.0,
                   help="seconds one exec of `true` may take (default 60)")
    p.add_argument("--cabin", default=os.path.join(repo, "target", "release", "cabin"))
    p.add_argument("--crun", default="crun")
    p.add_argument("--kernel", default=os.environ.get("CABIN_VMLINUX"))
    p.add_argument("--rootfs", default=os.environ.get("CABIN_ROOTFS"))
    p.add_argument("--environment", default="direct")
    p.add_argument("--host-cpu", default=None)
    p.add_argument("--commit", default="")
    a = p.parse_args(argv)
    if a.quick:
        a.execs, a.mib, a.rounds = 30, 32, 2
    if a.transfer_timeout is None:
        a.transfer_timeout = 60.0 + 1.5 * a.mib
    for name in ("execs", "mib", "rounds", "memory"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be at least 1")
    for name, path in (("--kernel ($CABIN_VMLINUX)", a.kernel),
                       ("--rootfs ($CABIN_ROOTFS)", a.rootfs)):
        if not path or not os.path.isfile(path):
            p.error(f"{name}: {path!r} is not a file")
    if not os.access(ib.HOST_BUSYBOX, os.X_OK):
        p.error(f"{ib.HOST_BUSYBOX} is missing (busybox-static): the host's side of the "
                "transfers")
    return a


def setup(ctx):
    a = ctx.args
    cabin = shutil.which(a.cabin)
    if not cabin:
        raise BenchError(f"cabin ({a.cabin}) is missing: cargo build --release")
    ctx.bin, ctx.env = {}, {}
    ctx.bin["cabin"], extra = ib.stage_binary("cabin", cabin, ctx.scratch)
    ctx.env["cabin"] = dict(os.environ, **extra)
    ctx.bin["busybox"] = bb.stage_file(ib.HOST_BUSYBOX, os.path.join(ctx.scratch, "busybox"))
    ctx.env["host"] = dict(os.environ)
    ctx.kernel = bb.stage_file(os.path.abspath(a.kernel), os.path.join(ctx.scratch, "guest"))
    ctx.rootfs = bb.stage_file(os.path.abspath(a.rootfs), os.path.join(ctx.scratch, "guest"))


def execs_in_round(total, rounds, r):
    """Round R's share of TOTAL runs: equal shares, the remainder in the first rounds."""
    return total // rounds + (1 if r < total % rounds else 0)


class Recorder:
    """Samples, failures and the count of failures in a row per kind."""

    def __init__(self):
        self.samples, self.failures = {}, []
        self.consecutive = {}

    def measure(self, what, fn, kind=None, quiet=False):
        kind = kind or what
        if self.consecutive.get(kind, 0) >= MAX_CONSECUTIVE_FAILURES:
            return None
        t0 = time.monotonic()
        try:
            value = fn()
        except (BenchError, OSError, subprocess.SubprocessError, ValueError) as e:
            log(f"FAILED: {what}: {e}")
            self.failures.append({"what": what, "error": str(e)})
            self.consecutive[kind] = self.consecutive.get(kind, 0) + 1
            if self.consecutive[kind] == MAX_CONSECUTIVE_FAILURES:
                log(f"{kind}: {MAX_CONSECUTIVE_FAILURES} failures in a row, not tried again")
            return None
        self.consecutive[kind] = 0
        if not quiet:
            shown = f"{value:.2f}" if isinstance(value, float) else "done"
            log(f"{what} ({time.monotonic() - t0:.1f} s): {shown}")
        return value

    def add(self, key, value):
        if value is not None:
            self.samples.setdefault(key, []).append(value)


def one_round(ctx, rec, ns, r, crun_ok):
    a = ctx.args
    guest = container = None
    ns.add_tap()
    try:
        guest = rec.measure(f"boot round {r + 1}", lambda: boot_guest(ctx, ns, r), kind="boot")
        if guest:
            rec.add("cabin_first_ms", rec.measure("first cabin exec", lambda: sb.checked(
                guest, lambda: cabin_true_ms(ctx, guest))))
        if crun_ok:
            container = rec.measure(f"crun start round {r + 1}", lambda: start_container(ctx),
                                    kind="crun start")
        if container:
            rec.add("crun_first_ms", rec.measure("first crun exec",
                                                 lambda: crun_true_ms(ctx, container)))
        steps = []
        if guest:
            steps.append(("cabin_exec_ms", "cabin exec", lambda: cabin_true_ms(ctx, guest)))
        if container:
            steps.append(("crun_exec_ms", "crun exec", lambda: crun_true_ms(ctx, container)))
        n = execs_in_round(a.execs, a.rounds, r)
        t0 = time.monotonic()
        for i in range(n):
            for key, what, fn in (steps if i % 2 == 0 else steps[::-1]):
                rec.add(key, rec.measure(f"{what} {i + 1}/{n}", fn, kind=what, quiet=True))
        if steps:
            log(f"{n} exec(s) of each in {time.monotonic() - t0:.1f} s")
        if not guest:
            return
        nbytes = a.mib * MIB
        order = TRANSFERS[r % len(TRANSFERS):] + TRANSFERS[:r % len(TRANSFERS)]
        for transport, direction in order:
            port = PORT_BASE + 2 * r + (0 if direction == "h2g" else 1)
            fn = TRANSFER_FN[(transport, direction)]
            # A failure carries the guest's console and cabin's stderr (a panic?).
            rec.add(f"{transport}_{direction}_mbs", rec.measure(
                f"{transport} {direction} {a.mib} MiB (MB/s)",
                lambda fn=fn, port=port: sb.checked(
                    guest, lambda: fn(ctx, guest, nbytes, ns, port))))
    finally:
        if container:
            stop_container(ctx, container)
        if guest:
            guest.stop()
        ns.del_tap()


def main(argv):
    a = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    ctx = Context()
    ctx.args = a
    ctx.scratch = tempfile.mkdtemp(prefix="execbench-")
    rec = Recorder()
    notes = []
    ns = None
    try:
        try:
            setup(ctx)
        except (OSError, BenchError, subprocess.SubprocessError) as e:
            log(f"error: {e}")
            return 2
        crun_skip = sb.setup_crun(ctx)
        if crun_skip:
            notes.append(f"crun rows skipped: {crun_skip}.")
        try:
            ns = ib.Netns()
        except BenchError as e:
            log(f"error: {e}")
            return 2
        for r in range(a.rounds):
            log(f"--- round {r + 1}/{a.rounds} ---")
            one_round(ctx, rec, ns, r, not crun_skip)
    finally:
        if ns:
            ns.close()
        shutil.rmtree(ctx.scratch, ignore_errors=True)

    notes += [
        "Exec times are the whole client process, spawn to exit, stdin /dev/null: for cabin "
        "its start, the API lookup of the vsock socket, the connection through the Unix "
        "socket and the agent running `true`; for crun, joining the container's namespaces "
        "and cgroup and running `true`.",
        "Transfers: each is timed from the sender's spawn until both ends exited (the "
        "receiver read to the end); all but TCP host → guest include one `cabin exec` start. "
        "TCP is busybox nc over virtio-net on a TAP; its receiver in the guest was started "
        "with `cabin exec` before the clock.",
        "Guest script (kernel command line `cabin.sh=`, one line per `;`): "
        f"`{GUEST_SCRIPT.strip().replace(chr(10), '; ')}`.",
    ]
    res = {
        "schema": SCHEMA,
        "environment": bb.environment(a),
        "config": {
            "quick": a.quick, "execs": a.execs, "mib": a.mib, "rounds": a.rounds,
            "transfer_timeout_s": a.transfer_timeout,
            "memory": a.memory, "kernel": os.path.abspath(a.kernel),
            "rootfs": os.path.abspath(a.rootfs), "cmdline": CMDLINE, "script": GUEST_SCRIPT,
            "container_script": CONTAINER_SCRIPT,
        },
        "argv": {"guest": guest_argv(ctx, "API.sock", "VSOCK.sock"),
                 "cabin_exec": ["cabin", "exec", "--api-sock", "API.sock", "--", "true"],
                 "crun_exec": ["crun", "--root", "ROOT", "exec", "CID", "true"]},
        "samples": rec.samples,
        "summary": {k: stats(v) for k, v in rec.samples.items()},
        "notes": notes,
        "failures": rec.failures,
    }
    md = render_markdown(res)
    sys.stderr.flush()
    sys.stdout.write(f"{MD_BEGIN}\n{md}{MD_END}\n")
    sys.stdout.write(f"{JSON_BEGIN}\n{json.dumps(res, indent=1)}\n{JSON_END}\n")
    sys.stdout.flush()
    return 1 if rec.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
