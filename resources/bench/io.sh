#!/usr/bin/env bash
# `make bench`: disk (virtio-blk), network (virtio-net on a TAP) and lifecycle
# (InstanceStart to init, pause/resume) of cabin against QEMU -M microvm, plus
# the Debian image's boot time. See resources/bench/iobench.py for the methods.
#
# usage: resources/bench/io.sh [iobench.py options]   (e.g. --quick, --runs 7,
#                                                      --only disk,net)
#        make bench CABIN_BENCH_ARGS=--quick
#
# Runs iobench.py directly when this host's KVM boots guests (`cabin check`
# exits 0), else inside the nested sandbox (see common.sh), and writes, in the
# repository:
#   build/bench/io.md     the tables
#   build/bench/io.json   every raw sample
#   build/bench/io.log    the driver's whole output
# The guests' backing files live in a scratch tmpfs directory; for a host-side
# O_DIRECT reference the driver also gets $CABIN_CACHE/iobench-rw, a directory
# on the real disk (made writable in the sandbox with --rw), emptied afterwards.
# Networking happens only inside a network namespace the driver creates and
# deletes (root needed). In the sandbox the whole run is bounded by
# $CABIN_BENCH_SANDBOX_TIMEOUT seconds (default 5400; raise it for more runs).
# Exit status: the driver's (0 all measurements succeeded, 1 some failed, 2 bad
# arguments), or 1 when no results came back.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck disable=SC2119 # bench_init takes only an optional --no-qemu
bench_init
require_artifacts CABIN_VMLINUX CABIN_ROOTFS
[[ -x /bin/busybox ]] || die "/bin/busybox is missing (busybox-static; resources/deps.sh)"
[[ "$(id -u)" == 0 ]] || die "needs root: network namespaces and TAP devices"

cache="${CABIN_CACHE:-${HOME:-/root}/.cache/cabin}"
rwdir="$cache/iobench-rw"
mkdir -p "$rwdir"
rm -f "$rwdir"/iobench-* 2>/dev/null || true

# The Debian image is optional here: without it the driver skips that table.
debian=()
if [[ -n "${CABIN_DEBIAN_ROOTFS:-}" && -f "$CABIN_DEBIAN_ROOTFS" ]]; then
    debian=(--debian-image "$CABIN_DEBIAN_ROOTFS")
else
    echo "bench: no Debian image at ${CABIN_DEBIAN_ROOTFS:-?} (resources/rootfs/debian.sh): its boot time is skipped" >&2
    debian=(--debian-image "")
fi

# shellcheck disable=SC2206 # CABIN_BENCH_ARGS is split into words on purpose
extra=(${CABIN_BENCH_ARGS:-})
bench_run io IOBENCH 5400 --rw "$rwdir" -- "$here/iobench.py" \
    --cabin "$cabin" \
    --kernel "$CABIN_VMLINUX" \
    --rootfs "$CABIN_ROOTFS" \
    "${debian[@]}" \
    --host-direct-dir "$rwdir" \
    --host-cpu "$host_cpu" \
    --commit "$commit" \
    "${extra[@]}" "$@"
rm -f "$rwdir"/iobench-* 2>/dev/null || true
bench_finish
