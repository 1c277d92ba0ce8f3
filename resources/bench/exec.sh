#!/usr/bin/env bash
# `cabin exec` and vsock: the round trip of `cabin exec -- true` into a booted
# guest against `crun exec` into a running container, and stream throughput
# over vsock (cabin exec's stdin and stdout) against TCP over virtio-net in the
# same guest. See resources/bench/execbench.py for the methods.
#
# usage: resources/bench/exec.sh [execbench.py options]   (e.g. --quick, --execs 500)
#
# Runs resources/bench/execbench.py directly when this host's KVM boots guests
# (`cabin check` exits 0), else inside the nested sandbox (see common.sh), and
# writes, in the repository:
#   build/bench/exec.md     the tables
#   build/bench/exec.json   every raw sample
#   build/bench/exec.log    the driver's whole output
# The guest image must hold cabin-agent (`make agent`, then the image's build
# script). Networking happens only inside a network namespace the driver
# creates and deletes (root needed). In the sandbox the whole run is bounded by
# $CABIN_BENCH_SANDBOX_TIMEOUT seconds (default 3600: the default run takes about
# 25 minutes there, most of it the 256 MiB transfers; 600 with --quick).
# Exit status: the driver's (0 all measurements succeeded, 1 some failed, 2 bad
# arguments), or 1 when no results came back.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_init --no-qemu
require_artifacts CABIN_VMLINUX CABIN_ROOTFS
[[ -x /bin/busybox ]] || die "/bin/busybox is missing (busybox-static; resources/deps.sh)"
[[ "$(id -u)" == 0 ]] || die "needs root: network namespaces and TAP devices"

timeout=3600
for arg in "$@"; do
    [[ "$arg" != --quick ]] || timeout=600
done

# shellcheck disable=SC2206 # CABIN_BENCH_ARGS is split into words on purpose
extra=(${CABIN_BENCH_ARGS:-})
bench_run exec EXECBENCH "$timeout" -- "$here/execbench.py" \
    --cabin "$cabin" \
    --kernel "$CABIN_VMLINUX" \
    --rootfs "$CABIN_ROOTFS" \
    --host-cpu "$host_cpu" \
    --commit "$commit" \
    "${extra[@]}" "$@"
bench_finish
