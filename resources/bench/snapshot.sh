#!/usr/bin/env bash
# Snapshots: time of `cabin ctl snapshot` (full and diff) and the files' sizes,
# restore latency (`cabin run --restore`) at two memory sizes against a cold
# boot and a crun start, and the memory of clones restored from one snapshot.
#
# usage: resources/bench/snapshot.sh [snapbench.py options]   (e.g. --quick, --runs 11)
#        FIRECRACKER=/path/to/firecracker resources/bench/snapshot.sh   (adds its restore)
#
# Runs resources/bench/snapbench.py directly when this host's KVM boots guests
# (`cabin check` exits 0), else inside the nested sandbox (see common.sh), and
# writes, in the repository:
#   build/bench/snapshot.md     the tables
#   build/bench/snapshot.json   every raw sample
#   build/bench/snapshot.log    the driver's whole output
#   build/bench/snapshot-failed/{small,big}  a snapshot whose restore failed, if any
# In the sandbox the whole run is bounded by $CABIN_BENCH_SANDBOX_TIMEOUT seconds
# (default 1800; 600 with --quick).
# Exit status: the driver's (0 all measurements succeeded, 1 some failed, 2 bad
# arguments), or 1 when no results came back.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_init --no-qemu
require_artifacts CABIN_VMLINUX CABIN_ROOTFS

timeout=1800
for arg in "$@"; do
    [[ "$arg" != --quick ]] || timeout=600
done
# Only CABIN_* and RUST_* variables cross into the sandbox: FIRECRACKER goes as
# an option.
fc=()
if [[ -n "${FIRECRACKER:-}" ]]; then
    [[ -x "$FIRECRACKER" ]] || die "FIRECRACKER=$FIRECRACKER is not an executable"
    fc=(--firecracker "$FIRECRACKER")
fi

# shellcheck disable=SC2206 # CABIN_BENCH_ARGS is split into words on purpose
extra=(${CABIN_BENCH_ARGS:-})
rm -rf "$out/snapshot-failed"
mkdir -p "$out/snapshot-failed"
bench_run snapshot SNAPBENCH "$timeout" -- "$here/snapbench.py" \
    --cabin "$cabin" \
    --kernel "$CABIN_VMLINUX" \
    --rootfs "$CABIN_ROOTFS" \
    --host-cpu "$host_cpu" \
    --commit "$commit" \
    --keep-failed "$out/snapshot-failed" \
    "${fc[@]}" "${extra[@]}" "$@"
bench_finish
