#!/usr/bin/env bash
# `make bench`: how closely a rate limiter holds a guest to its limit. A guest reads
# 40 MiB with dd from a disk limited to 10 MiB/s (a 1 MiB bucket refilled every
# 100 ms; tests/firecracker_client.rs, disk_rate_limiter_holds_a_guest_read_to_its_bandwidth),
# RUNS times (default 5) in one sandbox, or directly where this host's KVM boots
# guests. The guest times itself (/proc/uptime); the first MiB is the bucket's
# initial content, so the rate is (40 - 1) MiB over the time.
# Writes build/bench/ratelimit.{md,json,log}.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_init --no-qemu
require_artifacts CABIN_VMLINUX CABIN_ROOTFS
runs="${RUNS:-5}"
test_name=disk_rate_limiter_holds_a_guest_read_to_its_bandwidth
bin="$(cargo test -p vmm --test firecracker_client --no-run --message-format=json 2>/dev/null |
    jq -r 'select(.reason == "compiler-artifact" and .profile.test == true) | .executable | select(. != null)')"
[[ -x "$bin" ]] || die "cannot build the firecracker_client test binary"
script="for i in \$(seq $runs); do '$bin' --ignored --exact $test_name --nocapture 2>&1 | grep -a 'guest read' || echo 'guest read: run failed'; done"
bench_name=ratelimit
log="$out/ratelimit.log"
rc=0
if "$cabin" check >/dev/null 2>&1; then
    environment=direct
    bash -c "$script" | tee "$log" || rc=$?
else
    environment=nested-sandbox
    resources/sandbox/run --rw "$repo" -- bash -c "$script" | tee "$log" || rc=$?
fi
"$python" - "$log" "$out" "$environment" "$host_cpu" "$commit" <<'PY'
import json, re, statistics, sys
log, out, environment, cpu, commit = sys.argv[1:]
limit = 10.0
rates = [float(m.group(1)) for m in re.finditer(r"guest read \d+ MiB in [\d.]+ s: ([\d.]+) MiB/s", open(log, errors="replace").read())]
if not rates:
    sys.exit("bench: no rate came back; see " + log)
median = statistics.median(rates)
rows = [
    ("limit (MiB/s)", f"{limit:.1f}"),
    ("runs", str(len(rates))),
    ("median rate (MiB/s)", f"{median:.2f}"),
    ("min–max (MiB/s)", f"{min(rates):.2f}–{max(rates):.2f}"),
    ("median error", f"{(median - limit) / limit * 100:+.1f}%"),
]
md = ["## Rate limiter accuracy: guest dd from a disk limited to 10 MiB/s", "",
      f"Environment: {environment}; host CPU {cpu}; commit `{commit}`.", "",
      "| Metric | cabin |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
open(f"{out}/ratelimit.md", "w").write("\n".join(md) + "\n")
json.dump({"environment": environment, "commit": commit, "limit_mib_s": limit, "rates_mib_s": rates,
           "median_mib_s": median}, open(f"{out}/ratelimit.json", "w"), indent=2)
print("\n".join(md))
PY
bench_finish
