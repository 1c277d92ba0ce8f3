#!/usr/bin/env python3
"""API benchmark: latency, throughput and memory of the Firecracker HTTP API.

No guest is booted. Each VMM is started with only an API socket (cabin
`run --api-sock S`, Firecracker `--api-sock S` with its default seccomp
filters), so it sits before InstanceStart, where `PUT /drives` is accepted.

Latency and throughput. A client here is one pooled keep-alive HTTP/1.1
connection on AF_UNIX, written and parsed by hand (raw bytes, stdlib only).
All clients of a case are driven by one thread through epoll in a closed loop:
each connection sends its next request the moment the previous answer is
complete, so N clients keep exactly N requests in flight. A request's latency
is from just before its send() to the recv() that completes its answer
(time.perf_counter_ns); with 64 clients it therefore includes the time it
waits behind the other 63. Cases:

  GET /          1 client and 64 clients
  PUT /drives/scratch   the same, with a valid body naming an existing 1 MiB
                 scratch file (is_root_device false), answered 204 pre-boot

Each case runs --rounds times (default 5), interleaved across the VMMs and
cases (round 1: every case on every VMM, then round 2, ...), each time on
fresh connections after an untimed warm-up on them. Each round gives
nearest-rank p50 and p99 of its samples and its requests/s (timed requests /
wall time); the table shows the median of the rounds for each, so that one
round disturbed by other work on a shared host does not decide the figure (the
JSON also has the percentiles of all rounds' samples pooled). Python's garbage
collector is off while a loop runs. The client is one Python thread: with 64
clients it is the bottleneck for requests/s on a small host, equally for every
VMM, so compare the ratio.

Memory. A fresh process per VMM serves 8 keep-alive clients a mix of
GET /, GET /vm/config, PUT /drives (204), GET of an unknown path (404 for
cabin) and PUT /drives with an unknown field (400), in turn. After an untimed
warm-up of --rss-warmup requests its VmRSS (/proc/PID/status) and Rss
(/proc/PID/smaps_rollup) are read ("before"), then --rss-requests requests are
sent (default 100,000), sampled every tenth, and read again ("after").
The delta is after minus before; the samples in between show the noise, and
the growth over the second half separates a leak (growing all along) from a
heap still settling. The warm-up (default 20,000) lets the allocator reach its
working size first: cabin's RSS rises by about 100 KiB over its first ~50,000
requests and then stays flat (seen over 500,000).

Progress goes to stderr. The results go to stdout as a Markdown report and a
JSON document, each between marker lines (see api.sh):

  ===== APIBENCH MARKDOWN BEGIN ===== ... ===== APIBENCH MARKDOWN END =====
  ===== APIBENCH JSON BEGIN =====     ... ===== APIBENCH JSON END =====

Nothing is asserted. Exit status: 0 when every measurement ran and every answer
had the expected status, 1 when some did not (the report lists them), 2 on bad
arguments or missing inputs.

Python 3 standard library only; the nearest-rank percentile is bootbench.py's, imported.
"""

import argparse
import datetime
import gc
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # the repository (read-only in the sandbox) stays clean
sys.path.insert(0, HERE)
from bootbench import percentile  # noqa: E402  (nearest rank, shared with the other drivers)

MD_BEGIN = "===== APIBENCH MARKDOWN BEGIN ====="
MD_END = "===== APIBENCH MARKDOWN END ====="
JSON_BEGIN = "===== APIBENCH JSON BEGIN ====="
JSON_END = "===== APIBENCH JSON END ====="
SCHEMA = "cabin-apibench/1"

LABEL = {"cabin": "cabin", "firecracker": "Firecracker"}
DRIVE_ID = "scratch"
SCRATCH_BYTES = 1 << 20
RSS_CLIENTS = 8
RSS_SAMPLES = 10
# An answer that takes longer than this is a hung server, not a slow one.
STALL_S = 10.0
START_TIMEOUT_S = 10.0
TAIL_BYTES = 2000

CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
CONNECTION_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)


def log(msg):
    print(f"apibench: {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A failed measurement; the message says what happened."""


# --- HTTP/1.1 over a Unix socket --------------------------------------------------


def http_request(method, path, body=None):
    """The bytes of one keep-alive request, as a client library would send them."""
    data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
        + ("Content-Type: application/json\r\n" if body is not None else "")
        + f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def take_answer(buf):
    """(status, length consumed, connection closes) of the first whole answer in
    buf, or None while it is incomplete. Answers without Content-Length have no
    body (both servers send one whenever there is a body)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end + 2])
    m = CONTENT_LENGTH.search(head)
    total = end + 4 + (int(m.group(1)) if m else 0)
    if len(buf) < total:
        return None
    try:
        status = int(head[9:12])
    except ValueError as e:
        raise BenchError(f"not an HTTP answer: {head[:80]!r}") from e
    return status, total, CONNECTION_CLOSE.search(head) is not None


class Conn:
    """One pooled keep-alive connection and where it is in the closed loop."""

    __slots__ = ("sock", "buf", "index", "sent", "left", "t0", "dead")

    def __init__(self, path, index):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(STALL_S)
        self.sock.connect(path)
        self.sock.setblocking(False)
        self.buf = bytearray()
        self.index = index
        self.sent = 0
        self.left = 0
        self.t0 = 0
        self.dead = None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def open_conns(path, n):
    conns = []
    try:
        for i in range(n):
            conns.append(Conn(path, i))
    except OSError as e:
        for c in conns:
            c.close()
        raise BenchError(f"cannot open connection {len(conns) + 1} of {n} to {path}: {e}") from e
    return conns


def send(conn, data):
    """Sends one request (a few hundred bytes: the socket buffer takes it whole);
    False, with the connection marked dead, when the server has closed it."""
    try:
        conn.sock.sendall(data)
        return True
    except OSError as e:
        conn.dead = f"send: {e.strerror or e}"
        return False


def closed_loop(conns, per_conn, pick, latencies=None, statuses=None):
    """Sends per_conn requests on every live connection, each as soon as its
    previous answer is complete; pick(conn, seq) gives a request's bytes.
    Appends each latency in ns to latencies (if given) and counts the statuses
    of the answers on connections that stay open. Returns (wall seconds,
    answers received). A connection the server closes (e.g. after a 503 "too
    many connections") is marked dead, with the reason, and left out."""
    ep = select.epoll()
    by_fd = {}
    done = 0
    now = time.perf_counter_ns
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        for c in conns:
            if c.dead or per_conn <= 0:
                continue
            c.left = per_conn
            by_fd[c.sock.fileno()] = c
            ep.register(c.sock.fileno(), select.EPOLLIN)
        t_start = now()
        for fd, c in list(by_fd.items()):
            c.t0 = now()
            if not send(c, pick(c, c.sent)):
                ep.unregister(fd)
                del by_fd[fd]
        while by_fd:
            events = ep.poll(STALL_S)
            if not events:
                raise BenchError(
                    f"no answer in {STALL_S:.0f} s on {len(by_fd)} connection(s)")
            for fd, _ in events:
                c = by_fd[fd]
                try:
                    data = c.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    data, c.dead = b"", f"recv: {e}"
                t1 = now()
                if data:
                    c.buf += data
                    while True:
                        got = take_answer(c.buf)
                        if got is None:
                            break
                        status, used, closes = got
                        del c.buf[:used]
                        done += 1
                        if closes:
                            c.dead = f"closed by the server after a {status}"
                            break
                        if statuses is not None:
                            statuses[status] = statuses.get(status, 0) + 1
                        if latencies is not None:
                            latencies.append(t1 - c.t0)
                        c.sent += 1
                        c.left -= 1
                        if c.left > 0:
                            c.t0 = now()
                            if not send(c, pick(c, c.sent)):
                                break
                elif c.dead is None:
                    c.dead = "closed by the server"
                if c.dead is not None or c.left <= 0:
                    ep.unregister(fd)
                    del by_fd[fd]
        wall = (now() - t_start) / 1e9
    finally:
        if gc_was_on:
            gc.enable()
        ep.close()
    return wall, done


# --- the VMM processes --------------------------------------------------------------


def proc_kib(path, key):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise BenchError(f"no {key} in {path}")


class Vmm:
    """One VMM process serving its API socket, started and stopped on demand."""

    def __init__(self, name, binary, workdir):
        self.name = name
        self.binary = binary
        self.workdir = workdir
        self.starts = 0
        self.proc = None
        self.sock = None
        self.logf = None
        self.argv = None

    def command(self, sock):
        if self.name == "cabin":
            return [self.binary, "run", "--api-sock", sock]
        return [self.binary, "--api-sock", sock]

    def version(self):
        try:
            r = subprocess.run([self.binary, "--version"], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"? ({e})"
        lines = r.stdout.decode("utf-8", "replace").strip().splitlines()
        return lines[0] if lines else "?"

    def start(self):
        self.starts += 1
        self.sock = os.path.join(self.workdir, f"{self.name}-{self.starts}.sock")
        self.argv = self.command(self.sock)
        logpath = os.path.join(self.workdir, f"{self.name}-{self.starts}.log")
        self.logf = open(logpath, "w+b")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited ({self.proc.returncode}) before serving "
                                 f"its API: {self.tail()}")
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(self.sock)
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"{self.name} did not serve {self.sock} within "
                                 f"{START_TIMEOUT_S:.0f} s: {self.tail()}")
            time.sleep(0.01)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def tail(self):
        if self.logf is None:
            return ""
        self.logf.flush()
        self.logf.seek(0, os.SEEK_END)
        size = self.logf.tell()
        self.logf.seek(max(0, size - TAIL_BYTES))
        return self.logf.read().decode("utf-8", "replace").strip() or "(no output)"

    def rss(self):
        pid = self.proc.pid
        return {
            "vmrss_kib": proc_kib(f"/proc/{pid}/status", "VmRSS"),
            "smaps_rss_kib": proc_kib(f"/proc/{pid}/smaps_rollup", "Rss"),
        }

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        if self.logf is not None:
            self.logf.close()
        if self.sock and os.path.exists(self.sock):
            os.unlink(self.sock)
        self.proc = self.logf = None


# --- the measurements --------------------------------------------------------------


def requests_for(scratch):
    drive = {"drive_id": DRIVE_ID, "path_on_host": scratch,
             "is_root_device": False, "is_read_only": False}
    bad = dict(drive, no_such_field=1)
    return {
        "get_root": (http_request("GET", "/"), 200),
        "put_drive": (http_request("PUT", f"/drives/{DRIVE_ID}", drive), 204),
        "mix": [
            http_request("GET", "/"),
            http_request("GET", "/vm/config"),
            http_request("PUT", f"/drives/{DRIVE_ID}", drive),
            http_request("GET", "/no-such-resource"),
            http_request("PUT", f"/drives/{DRIVE_ID}", bad),
        ],
    }


def run_case(vmm, req, expect, clients, per_client, warmup):
    """One round of one case: fresh connections, warm-up, timed closed loop."""
    conns = open_conns(vmm.sock, clients)
    try:
        statuses = {}
        closed_loop(conns, warmup, lambda c, k: req, statuses=statuses)
        latencies = []
        wall, _ = closed_loop(conns, per_client, lambda c, k: req, latencies, statuses)
    finally:
        for c in conns:
            c.close()
    dead = sum(1 for c in conns if c.dead)
    unexpected = sum(n for s, n in statuses.items() if s != expect)
    latencies.sort()
    return {
        "clients": clients,
        "requests": len(latencies),
        "wall_s": wall,
        "rps": len(latencies) / wall if wall > 0 else None,
        "p50_us": percentile(latencies, 50) / 1000 if latencies else None,
        "p99_us": percentile(latencies, 99) / 1000 if latencies else None,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "unexpected_statuses": unexpected,
        "connections_closed_by_server": dead,
        "served_connections": clients - dead,
        "close_reasons": sorted({c.dead for c in conns if c.dead}),
    }, latencies


def run_rss(vmm, reqs, warmup, total):
    """Memory before and after `total` mixed requests on a fresh process."""
    vmm.start()
    try:
        rss_start = vmm.rss()
        conns = open_conns(vmm.sock, RSS_CLIENTS)
        mix = reqs["mix"]

        def pick(c, k):
            return mix[(c.index + k) % len(mix)]

        statuses = {}
        try:
            closed_loop(conns, max(1, warmup // RSS_CLIENTS), pick, statuses=statuses)
            before = vmm.rss()
            samples = [dict(before, requests=0)]
            chunk = max(1, total // RSS_SAMPLES // RSS_CLIENTS)
            sent, wall = 0, 0.0
            for _ in range(RSS_SAMPLES):
                w, n = closed_loop(conns, chunk, pick, statuses=statuses)
                sent += n
                wall += w
                samples.append(dict(vmm.rss(), requests=sent))
            after = vmm.rss()
        finally:
            for c in conns:
                c.close()
        if not vmm.alive():
            raise BenchError(f"{vmm.name} died during the mixed load: {vmm.tail()}")
        return {
            "clients": RSS_CLIENTS,
            "warmup_requests": warmup,
            "requests": sent,
            "wall_s": wall,
            "rps": sent / wall if wall > 0 else None,
            "at_start": rss_start,
            "before": before,
            "after": after,
            "delta_vmrss_kib": after["vmrss_kib"] - before["vmrss_kib"],
            "delta_smaps_rss_kib": after["smaps_rss_kib"] - before["smaps_rss_kib"],
            "samples": samples,
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "connections_closed_by_server": sum(1 for c in conns if c.dead),
        }
    finally:
        vmm.stop()


# --- output ------------------------------------------------------------------------


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fmt(v, spec):
    return "–" if v is None else format(v, spec)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}"


def render_markdown(res):
    env, cfg, names = res["environment"], res["config"], res["config"]["vmms"]
    peer = names[1] if len(names) > 1 else None
    lines = ["## API benchmark: Firecracker's HTTP API on a Unix socket", ""]
    lines.append(
        f"Environment: **{env['kind']}** on the host (no guest booted; host CPU: "
        f"{env['host_cpu']}), {env['cpus']} CPUs, kernel {env['kernel_release']}, "
        f"load average {env['loadavg_start']} at the start; commit `{env['commit'] or '?'}`; "
        f"{env['date_utc']}."
    )
    lines.append("")
    lines.append(
        "Method: each client is one keep-alive HTTP/1.1 connection on the API socket; "
        "the clients of a case run in a closed loop (the next request leaves when the "
        "previous answer is complete) from one Python thread. "
        f"{cfg['rounds']} round{'s' if cfg['rounds'] > 1 else ''}, interleaved across VMMs, each after a warm-up: "
        f"1 client × {cfg['requests_1']} and {cfg['clients']} clients × "
        f"{cfg['requests_per_client']} requests per round. Cells: the median over the "
        "rounds of each round's p50, p99 (µs, lower is better) and req/s (higher is "
        "better). `PUT /drives` is pre-boot, with a valid body, answered 204. The client "
        "is one Python thread: with 64 clients it limits req/s."
    )
    lines.append("")
    header = ["Metric"] + [LABEL[n] for n in names]
    if peer:
        header.append(f"cabin/{LABEL[peer]}")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))

    def row(label, values, spec, marks=(), compare=True):
        cells = [label] + [fmt(v, spec) + ("*" if v is not None and n in marks else "")
                           for n, v in zip(names, values)]
        if peer:
            cells.append(ratio(values[0], values[1]) + ("*" if marks else "")
                         if compare else "–")
        lines.append("| " + " | ".join(cells) + " |")

    partial = []
    for case in res["cases"]:
        s = [res["vmms"][n]["cases"].get(case["id"], {}).get("summary") or {} for n in names]
        marks = {n for n, x in zip(names, s)
                 if x and x["served_connections_min"] < case["clients"]}
        partial += [(n, case, x["served_connections_min"])
                    for n, x in zip(names, s) if n in marks]
        title = f"{case['title']}, {case['clients']} client{'s' if case['clients'] > 1 else ''}"
        # Latency under fewer connections is not comparable; throughput still is.
        row(f"{title}: p50 (µs)", [x.get("p50_us") for x in s], ".1f", marks, not marks)
        row(f"{title}: p99 (µs)", [x.get("p99_us") for x in s], ".1f", marks, not marks)
        row(f"{title}: req/s", [x.get("rps") for x in s], ",.0f", marks)
    rss = [res["vmms"][n].get("rss") or {} for n in names]
    total = next((r["requests"] for r in rss if r), cfg["rss_requests"])
    for key, what in (("vmrss_kib", "VmRSS"), ("smaps_rss_kib", "smaps_rollup Rss")):
        row(f"{what} before the mixed load (KiB)",
            [(r.get("before") or {}).get(key) for r in rss], ",d")
        row(f"{what} after {total:,} mixed requests (KiB)",
            [(r.get("after") or {}).get(key) for r in rss], ",d")
        row(f"{what} delta (KiB)", [r.get(f"delta_{key}") for r in rss], "+,d")
    lines.append("")
    for n, case, served in partial:
        lines.append(f"- \\* {LABEL[n]} served only {served} of the {case['clients']} "
                     f"connections of {case['title']} (it closed the others); its figures are for those, its latency not compared.")
    for n, r in zip(names, rss):
        if not r:
            continue
        vm = [s["vmrss_kib"] for s in r["samples"]]
        half = vm[-1] - vm[len(vm) // 2]
        lines.append(
            f"- {LABEL[n]} mixed load: {r['clients']} clients, {r['requests']:,} requests "
            f"after {r['warmup_requests']:,} warm-up ({fmt(r['rps'], ',.0f')} req/s); "
            f"VmRSS at every tenth: {min(vm):,}–{max(vm):,} KiB, {half:+,} KiB over the "
            f"second half; at process start "
            f"{r['at_start']['vmrss_kib']:,} KiB; statuses "
            + ", ".join(f"{k}: {v:,}" for k, v in r["statuses"].items()) + "."
        )
    for n in names:
        v = res["vmms"][n]
        lines.append(f"- {LABEL[n]}: `{v['version']}`; command: `{' '.join(v['argv'])}`")
    if peer:
        lines.append("- Ratios are cabin/peer: below 1 is better for latency and memory, "
                     "above 1 for req/s.")
    for note in res["notes"]:
        lines.append(f"- {note}")
    if res["failures"]:
        lines.append("")
        lines.append(f"**{len(res['failures'])} problem(s):**")
        for f in res["failures"]:
            lines.append(f"- {LABEL.get(f['vmm'], f['vmm'])} {f['what']}: {f['error']}")
    return "\n".join(lines) + "\n"


# --- main -----------------------------------------------------------------------


def parse_args(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    p = argparse.ArgumentParser(description="API latency, throughput and memory of cabin "
                                "(and Firecracker, when given).")
    p.add_argument("--cabin", default=os.path.join(repo, "target", "release", "cabin"))
    p.add_argument("--firecracker", default="",
                   help="a Firecracker binary to measure as a peer (default: none)")
    p.add_argument("--cloud-hypervisor", default="",
                   help="noted and skipped: its API differs (REST under /api/v1)")
    p.add_argument("--rounds", type=int, default=5, help="rounds of every case (default 5)")
    p.add_argument("--requests-1", type=int, default=5000,
                   help="timed requests per round with 1 client (default 5000)")
    p.add_argument("--clients", type=int, default=64, help="concurrent clients (default 64)")
    p.add_argument("--requests-per-client", type=int, default=300,
                   help="timed requests per client per round with --clients (default 300)")
    p.add_argument("--warmup", type=int, default=200,
                   help="untimed requests per connection before each round (default 200; "
                        "a tenth of it, at least 5, per connection with --clients)")
    p.add_argument("--rss-requests", type=int, default=100_000,
                   help="mixed requests between the two RSS readings (default 100000)")
    p.add_argument("--rss-warmup", type=int, default=20_000,
                   help="mixed requests before the first RSS reading (default 20000)")
    p.add_argument("--quick", action="store_true",
                   help="a fast check of this script: 1 round, small counts")
    p.add_argument("--environment", default="direct", help="where this runs (set by api.sh)")
    p.add_argument("--host-cpu", default=None, help="CPU model (set by api.sh)")
    p.add_argument("--commit", default="", help="source revision measured (set by api.sh)")
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.requests_1, a.requests_per_client = 1, 500, 30
        a.warmup, a.rss_requests, a.rss_warmup = 20, 5000, 200
    if min(a.rounds, a.requests_1, a.clients, a.requests_per_client, a.rss_requests) < 1:
        p.error("--rounds, --requests-1, --clients, --requests-per-client and "
                "--rss-requests must be at least 1")
    if a.warmup < 0 or a.rss_warmup < 0:
        p.error("--warmup and --rss-warmup must be at least 0")
    return a


def main(argv):
    args = parse_args(argv)
    names = ["cabin"] + (["firecracker"] if args.firecracker else [])
    binaries = {"cabin": args.cabin, "firecracker": args.firecracker}
    for n in names:
        if shutil.which(binaries[n]) is None:
            log(f"error: the {n} binary {binaries[n]} is missing or not executable")
            return 2
    notes = []
    if args.cloud_hypervisor:
        notes.append(
            "Cloud Hypervisor was given but is not measured: its API differs (REST "
            "under `/api/v1`, a VM created whole by `vm.create`, no pre-boot "
            "`PUT /drives`), so these requests do not apply to it.")
    if args.firecracker:
        notes.append(
            "Firecracker's HTTP server (micro-http) caps its open connections (10 in "
            "its source; more are answered 503 and closed): with more clients its "
            "figures cover only the connections it kept.")

    workdir = tempfile.mkdtemp(prefix="apibench-")
    scratch = os.path.join(workdir, "scratch.img")
    with open(scratch, "wb") as f:
        f.truncate(SCRATCH_BYTES)
    reqs = requests_for(scratch)
    cases = []
    for key, title in (("get_root", "`GET /`"), ("put_drive", "`PUT /drives`")):
        for clients in (1, args.clients):
            cases.append({"id": f"{key}_{clients}", "key": key, "title": title,
                          "clients": clients,
                          "per_client": args.requests_1 if clients == 1
                          else args.requests_per_client,
                          "warmup": args.warmup if clients == 1
                          else max(5, args.warmup // 10)})
    vmms = {n: Vmm(n, os.path.abspath(shutil.which(binaries[n])), workdir) for n in names}
    out = {n: {"version": vmms[n].version(), "argv": None,
               "cases": {c["id"]: {"rounds": []} for c in cases}, "rss": None} for n in names}
    pooled = {n: {c["id"]: [] for c in cases} for n in names}
    failures = []

    def fail(n, what, err):
        log(f"PROBLEM: {n} {what}: {err}")
        failures.append({"vmm": n, "what": what, "error": str(err)})

    loadavg_start = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    try:
        for n in names:
            try:
                vmms[n].start()
                out[n]["argv"] = [os.path.basename(vmms[n].argv[0])] + vmms[n].argv[1:]
            except BenchError as e:
                fail(n, "start", e)
        for r in range(args.rounds):
            for case in cases:
                req, expect = reqs[case["key"]]
                for n in names:
                    vmm = vmms[n]
                    if not vmm.alive():
                        continue
                    what = f"{case['id']} round {r + 1}"
                    try:
                        res, lat = run_case(vmm, req, expect, case["clients"],
                                            case["per_client"], case["warmup"])
                    except (BenchError, OSError) as e:
                        fail(n, what, f"{e}; {vmm.tail() if not vmm.alive() else 'still running'}")
                        continue
                    out[n]["cases"][case["id"]]["rounds"].append(res)
                    pooled[n][case["id"]].extend(lat)
                    if res["unexpected_statuses"]:
                        fail(n, what, f"{res['unexpected_statuses']} answers were not {expect} "
                             f"(statuses {res['statuses']})")
                    if res["connections_closed_by_server"]:
                        # cabin must serve them all; a peer's own limit is a finding
                        # (marked in the table), not a failed measurement.
                        closed = (f"{res['connections_closed_by_server']} of "
                                  f"{case['clients']} connections closed by the server "
                                  f"({'; '.join(res['close_reasons'])})")
                        if n == "cabin":
                            fail(n, what, closed)
                        else:
                            log(f"{n} {what}: {closed}")
                    log(f"{n} {what}: p50 {fmt(res['p50_us'], '.1f')} µs, p99 "
                        f"{fmt(res['p99_us'], '.1f')} µs, {fmt(res['rps'], ',.0f')} req/s")
        for n in names:
            vmms[n].stop()
        for n in names:
            log(f"{n}: {args.rss_requests:,} mixed requests for RSS")
            try:
                rss = run_rss(vmms[n], reqs, args.rss_warmup, args.rss_requests)
            except (BenchError, OSError) as e:
                fail(n, "mixed load (RSS)", e)
                continue
            out[n]["rss"] = rss
            if rss["connections_closed_by_server"]:
                fail(n, "mixed load (RSS)", f"{rss['connections_closed_by_server']} of "
                     f"{RSS_CLIENTS} connections closed by the server")
            log(f"{n}: VmRSS {rss['before']['vmrss_kib']} -> {rss['after']['vmrss_kib']} KiB, "
                f"smaps_rollup Rss {rss['before']['smaps_rss_kib']} -> "
                f"{rss['after']['smaps_rss_kib']} KiB")
    finally:
        for v in vmms.values():
            v.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    for n in names:
        for case in cases:
            entry = out[n]["cases"][case["id"]]
            lat = sorted(pooled[n][case["id"]])
            rounds = [x for x in entry["rounds"] if x["requests"]]
            entry["summary"] = {
                "rounds": len(rounds),
                "p50_us": statistics.median(x["p50_us"] for x in rounds),
                "p99_us": statistics.median(x["p99_us"] for x in rounds),
                "rps": statistics.median(x["rps"] for x in rounds),
                "served_connections_min": min(x["served_connections"] for x in rounds),
            } if rounds else None
            entry["pooled"] = {
                "requests": len(lat),
                "p50_us": percentile(lat, 50) / 1000,
                "p99_us": percentile(lat, 99) / 1000,
                "p999_us": percentile(lat, 99.9) / 1000,
                "max_us": lat[-1] / 1000,
                "mean_us": statistics.fmean(lat) / 1000,
            } if lat else None

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
            "loadavg_start": loadavg_start,
            "loadavg_end": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
        },
        "config": {
            "vmms": names,
            "rounds": args.rounds,
            "requests_1": args.requests_1,
            "clients": args.clients,
            "requests_per_client": args.requests_per_client,
            "warmup": args.warmup,
            "rss_requests": args.rss_requests,
            "rss_warmup": args.rss_warmup,
            "rss_clients": RSS_CLIENTS,
            "drive_body": json.loads(reqs["put_drive"][0].split(b"\r\n\r\n", 1)[1]),
            "mix": [m.split(b"\r\n", 1)[0].decode() for m in reqs["mix"]],
        },
        "cases": [{k: c[k] for k in ("id", "title", "clients", "per_client", "warmup")}
                  for c in cases],
        "vmms": out,
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
