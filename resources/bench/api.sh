#!/usr/bin/env bash
# `make bench`: latency, throughput and memory of cabin's API server (Firecracker's
# HTTP API on a Unix socket), and of Firecracker's when it is given.
#
# usage: resources/bench/api.sh [api.py options]   (e.g. --quick, --rounds 9)
#        make bench CABIN_BENCH_ARGS=--quick
# environment:
#   CABIN=PATH              the cabin binary (default target/release/cabin)
#   FIRECRACKER=PATH        also measure this Firecracker binary, interleaved
#   CLOUD_HYPERVISOR=PATH   noted in the report and skipped: its API differs
#
# No guest is booted: each VMM only serves its API socket before InstanceStart,
# so this runs directly on the host (neither the nested sandbox nor QEMU is
# needed). See resources/bench/api.py for the method. Writes, in the repository:
#   build/bench/api.md     the table
#   build/bench/api.json   every round's figures and the RSS samples
#   build/bench/api.log    the driver's whole output
# Exit status: the driver's (0 every measurement ran with the expected answers,
# 1 some did not, 2 bad arguments), or 1 when no results came back.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bench_init --no-qemu

peers=()
if [[ -n "${FIRECRACKER:-}" ]]; then
    [[ -x "$FIRECRACKER" ]] || die "FIRECRACKER=$FIRECRACKER is not an executable"
    peers+=(--firecracker "$FIRECRACKER")
fi
if [[ -n "${CLOUD_HYPERVISOR:-}" ]]; then
    echo "bench: CLOUD_HYPERVISOR is set but skipped: its API differs (REST under /api/v1)" >&2
    peers+=(--cloud-hypervisor "$CLOUD_HYPERVISOR")
fi

bench_name=api
log="$out/$bench_name.log"
rm -f "$out/$bench_name.md" "$out/$bench_name.json"
# shellcheck disable=SC2206 # CABIN_BENCH_ARGS is split into words on purpose
extra=(${CABIN_BENCH_ARGS:-})
set +e
"$python" "$here/api.py" --environment direct \
    --cabin "$cabin" \
    "${peers[@]}" \
    --host-cpu "$host_cpu" \
    --commit "$commit" \
    "${extra[@]}" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

md="$(bench_extract "===== APIBENCH MARKDOWN BEGIN =====" "===== APIBENCH MARKDOWN END =====")" || md=""
json="$(bench_extract "===== APIBENCH JSON BEGIN =====" "===== APIBENCH JSON END =====")" || json=""
[[ -n "$md" && -n "$json" ]] || die "the benchmark produced no results (exit status $rc); see $log"
printf '%s\n' "$json" >"$out/$bench_name.json.tmp"
"$python" -c 'import json, sys; json.load(open(sys.argv[1]))' "$out/$bench_name.json.tmp" ||
    die "the JSON results are garbled; see $log"
mv "$out/$bench_name.json.tmp" "$out/$bench_name.json"
printf '%s\n' "$md" >"$out/$bench_name.md"
bench_finish
