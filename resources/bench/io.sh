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
# exits 0), else inside the nested sandbox (resources/sandbox/run). The driver
# prints a Markdown report and a JSON document between marker lines; this
# script cuts them out of its output (the sandbox sees the host read-only) and
# writes, in the repository:
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

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

die() {
    printf 'bench: error: %s\n' "$*" >&2
    exit 1
}

paths="$(resources/paths.sh)" || die "resources/paths.sh failed"
eval "$paths"
cache="${CABIN_CACHE:-${HOME:-/root}/.cache/cabin}"

cabin="$repo/target/release/cabin"
[[ -x "$cabin" ]] || die "$cabin is missing: run 'cargo build --release' (make bench does)"
for var in CABIN_VMLINUX CABIN_ROOTFS; do
    [[ -n "${!var:-}" ]] || die "resources/paths.sh did not set $var"
    [[ -f "${!var}" ]] || die "$var=${!var} does not exist: run 'make artifacts' (make bench does)"
done
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is not installed (resources/deps.sh)"
[[ -x /bin/busybox ]] || die "/bin/busybox is missing (busybox-static; resources/deps.sh)"
[[ "$(id -u)" == 0 ]] || die "needs root: network namespaces and TAP devices"

# The distribution's Python: same path inside the sandbox, no writable home needed.
python=/usr/bin/python3
[[ -x "$python" ]] || python="$(command -v python3)" || die "python3 is not installed"

host_cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain 2>/dev/null | head -n 1)" ]]; then
    commit="$commit+dirty"
fi

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
args=(
    --cabin "$cabin"
    --kernel "$CABIN_VMLINUX"
    --rootfs "$CABIN_ROOTFS"
    "${debian[@]}"
    --host-direct-dir "$rwdir"
    --host-cpu "${host_cpu:-unknown}"
    --commit "$commit"
    "${extra[@]}" "$@"
)

out="$repo/build/bench"
mkdir -p "$out"
log="$out/io.log"
rm -f "$out/io.md" "$out/io.json"

set +e
if "$cabin" check >/dev/null 2>&1; then
    echo "bench: this host's KVM boots guests: measuring directly" >&2
    "$python" "$here/iobench.py" --environment direct "${args[@]}" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
else
    echo "bench: this host's KVM cannot boot Linux natively: measuring inside the nested sandbox" >&2
    echo "bench: (nested numbers are not hardware numbers: compare the cabin/QEMU ratios)" >&2
    resources/sandbox/run --timeout "${CABIN_BENCH_SANDBOX_TIMEOUT:-5400}" --rw "$rwdir" -- \
        "$python" "$here/iobench.py" --environment nested-sandbox "${args[@]}" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    if [[ "$rc" == 125 ]]; then
        echo "bench: the sandbox itself failed or timed out (status 125); see its messages above" >&2
    fi
fi
set -e
rm -f "$rwdir"/iobench-* 2>/dev/null || true

# extract BEGIN END: the lines strictly between two marker lines of the log.
extract() {
    tr -d '\r' <"$log" | awk -v b="$1" -v e="$2" '
        $0 == e { inside = 0 }
        inside { print }
        $0 == b { inside = 1; found = 1 }
        END { exit !found }'
}
md="$(extract '===== IOBENCH MARKDOWN BEGIN =====' '===== IOBENCH MARKDOWN END =====')" || md=""
json="$(extract '===== IOBENCH JSON BEGIN =====' '===== IOBENCH JSON END =====')" || json=""
if [[ -z "$md" || -z "$json" ]]; then
    die "the benchmark produced no results (exit status $rc); see $log"
fi
printf '%s\n' "$json" >"$out/io.json.tmp"
"$python" -c 'import json, sys; json.load(open(sys.argv[1]))' "$out/io.json.tmp" ||
    die "the JSON results are garbled (console noise?); see $log"
mv "$out/io.json.tmp" "$out/io.json"
printf '%s\n' "$md" >"$out/io.md"

echo
echo "bench: wrote ${out#"$repo"/}/io.md, io.json and io.log"
if [[ "$rc" != 0 ]]; then
    echo "bench: some measurements failed (exit status $rc); see the tables and $log" >&2
fi
exit "$rc"
