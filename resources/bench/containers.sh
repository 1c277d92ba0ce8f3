#!/usr/bin/env bash
# `make bench-containers`: the same busybox workloads in a host process, a crun
# container, a cabin microVM (booted, and for the idle launch also restored from
# a snapshot) and a QEMU -M microvm VM; see containers.py for what is measured
# and how.
#
# usage: resources/bench/containers.sh [containers.py options]  (e.g. --runs 7)
#        make bench-containers [QUICK=1]
#
# Runs containers.py directly when this host's KVM boots guests (`cabin check`
# exits 0), else with all four runtimes inside the nested sandbox (see
# common.sh), and writes, in the repository:
#   build/bench/containers.md    the tables
#   build/bench/containers.json  every raw sample
#   build/bench/containers.log   the driver's whole output
#   build/bench/containers.png   a chart, one panel per metric (chart.py)
# With --quick (QUICK=1: one run, small sizes, and --check, as make test does)
# the files are containers-quick.* instead, so a full run's results stay.
# In the sandbox the run is bounded by $CABIN_BENCH_SANDBOX_TIMEOUT seconds
# (default 5400; 450 with --quick).
# Exit status: the driver's (0 all measurements succeeded and, with --check,
# every cell is real; 1 otherwise; 2 bad arguments), or 1 when no results
# came back.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck disable=SC2119 # bench_init takes only an optional --no-qemu
bench_init
require_artifacts CABIN_VMLINUX CABIN_ROOTFS
[[ -x /bin/busybox ]] || die "/bin/busybox is missing (busybox-static; resources/deps.sh)"
command -v crun >/dev/null || die "crun is not installed (resources/deps.sh)"
command -v debugfs >/dev/null || die "debugfs is not installed (e2fsprogs; resources/deps.sh)"
[[ "$(id -u)" == 0 ]] || die "needs root: crun runs the containers as root, with cgroup limits"

name=containers
timeout=5400
for arg in "$@"; do
    if [[ "$arg" == --quick ]]; then
        # The quick run takes 2-3 min; the nested sandbox's QEMU TCG has, rarely,
        # hung for good (both CPUs spinning, no kernel message): give up on an
        # attempt after 450 s (bench_run tries three times) rather than 90 min.
        name=containers-quick
        timeout=450
    fi
done

# shellcheck disable=SC2206 # CABIN_BENCH_ARGS is split into words on purpose
extra=(${CABIN_BENCH_ARGS:-})
bench_run "$name" CONTAINERS "$timeout" -- "$here/containers.py" \
    --cabin "$cabin" \
    --kernel "$CABIN_VMLINUX" \
    --rootfs "$CABIN_ROOTFS" \
    --host-cpu "$host_cpu" \
    --commit "$commit" \
    "${extra[@]}" "$@"
if ! "$python" "$here/chart.py" "$out/$name.json" "$out/$name.png"; then
    echo "bench: the chart could not be drawn (python3-matplotlib; resources/deps.sh)" >&2
    [[ "$rc" != 0 ]] || rc=1
fi
bench_finish
