#!/usr/bin/env bash
# `make bench`: boot time and memory overhead of cabin against QEMU -M microvm.
#
# usage: resources/bench/boot.sh [bootbench.py options]   (e.g. --quick, --runs 11)
#        make bench CABIN_BENCH_ARGS=--quick
#
# Runs resources/bench/bootbench.py directly when this host's KVM boots guests
# (`cabin check` exits 0), else inside the nested sandbox (see common.sh), and
# writes, in the repository:
#   build/bench/boot.md     the table
#   build/bench/boot.json   every raw sample
#   build/bench/boot.log    the driver's whole output
# In the sandbox the whole run is bounded by $CABIN_BENCH_SANDBOX_TIMEOUT seconds
# (default 1800; raise it for many --runs).
# Exit status: the driver's (0 all measurements succeeded, 1 some failed, 2 bad
# arguments), or 1 when no results came back.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck disable=SC2119 # bench_init takes only an optional --no-qemu
bench_init
require_artifacts CABIN_VMLINUX CABIN_TEST_INITRAMFS

# shellcheck disable=SC2206 # CABIN_BENCH_ARGS is split into words on purpose
extra=(${CABIN_BENCH_ARGS:-})
bench_run boot BOOTBENCH 1800 -- "$here/bootbench.py" \
    --cabin "$cabin" \
    --kernel "$CABIN_VMLINUX" \
    --initrd "$CABIN_TEST_INITRAMFS" \
    --host-cpu "$host_cpu" \
    --commit "$commit" \
    "${extra[@]}" "$@"
bench_finish
