#!/usr/bin/env bash
# `make bench`: Debian's own kernel (vmlinuz + its initramfs-tools initrd) booted
# to systemd's multi-user target and powered off, cabin against QEMU
# -M microvm with ACPI. See resources/bench/distrobench.py for the method.
#
# usage: resources/bench/distro.sh [distrobench.py options]   (e.g. --quick,
#                                                            --runs 7, --vmm qemu)
#        make bench CABIN_BENCH_ARGS=--quick
#
# Runs distrobench.py directly when this host's KVM boots guests (`cabin check`
# exits 0), else inside the nested sandbox (see common.sh), and writes, in the
# repository:
#   build/bench/distro.md     the table
#   build/bench/distro.json   every raw sample
#   build/bench/distro.log    the driver's whole output
# In the sandbox the whole run is bounded by $CABIN_BENCH_SANDBOX_TIMEOUT seconds
# (default 3600). Exit status: the driver's (0 all boots succeeded, 1 some
# failed, 2 bad arguments), or 1 when no results came back.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck disable=SC2119 # bench_init takes only an optional --no-qemu
bench_init
require_artifacts CABIN_DEBIAN_VMLINUZ CABIN_DEBIAN_INITRD CABIN_DEBIAN_ROOTFS

# shellcheck disable=SC2206 # CABIN_BENCH_ARGS is split into words on purpose
extra=(${CABIN_BENCH_ARGS:-})
bench_run distro DISTROBENCH 3600 -- "$here/distrobench.py" \
    --cabin "$cabin" \
    --kernel "$CABIN_DEBIAN_VMLINUZ" \
    --initrd "$CABIN_DEBIAN_INITRD" \
    --image "$CABIN_DEBIAN_ROOTFS" \
    --host-cpu "$host_cpu" \
    --commit "$commit" \
    "${extra[@]}" "$@"
bench_finish
