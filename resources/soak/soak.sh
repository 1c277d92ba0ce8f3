#!/usr/bin/env bash
# `make soak`: boots many guests, many at once, with disk and network traffic,
# cabin alternating with QEMU -M microvm; see soak.py for what each guest does
# and what counts as a failure.
#
# usage: resources/soak/soak.sh [soak.py options]   (e.g. --guests 20 --parallel 5)
#        make soak [SOAK_ARGS="..."]
#
# Runs soak.py directly when this host's KVM boots guests (`cabin check` exits
# 0), else inside the nested sandbox (resources/bench/common.sh), and writes:
#   build/soak/soak.md    the report: passes and failures per VMM, and each
#                         failure with its VMM's exit and the guest's last lines
#   build/soak/soak.json  every guest's record
#   build/soak/soak.log   the driver's whole output
# In the sandbox the run is bounded by $CABIN_BENCH_SANDBOX_TIMEOUT seconds
# (default 5400).
# Exit status: 0 every guest passed, 1 some failed (or no report came back),
# 2 bad arguments.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=../bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../bench/common.sh"
# QEMU is needed unless the VMMs are only cabin (--vmm cabin).
no_qemu=()
prev=
for arg in "$@"; do
    if [[ "$arg" == --vmm=cabin || ("$prev" == --vmm && "$arg" == cabin) ]]; then
        no_qemu=(--no-qemu)
    fi
    prev="$arg"
done
bench_init "${no_qemu[@]}"
require_artifacts CABIN_VMLINUX CABIN_ROOTFS
out="$repo/build/soak"
mkdir -p "$out"

bench_run soak SOAK 5400 -- "$repo/resources/soak/soak.py" \
    --cabin "$cabin" \
    --kernel "$CABIN_VMLINUX" \
    --rootfs "$CABIN_ROOTFS" \
    --host-cpu "$host_cpu" \
    --commit "$commit" \
    "$@"
bench_finish
