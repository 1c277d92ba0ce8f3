#!/usr/bin/env bash
# `make bench`: boot time and memory overhead of cabin against QEMU -M microvm.
#
# usage: resources/bench/boot.sh [bootbench.py options]   (e.g. --quick, --runs 11)
#        make bench CABIN_BENCH_ARGS=--quick
#
# Runs resources/bench/bootbench.py directly when this host's KVM boots guests
# (`cabin check` exits 0), else inside the nested sandbox (resources/sandbox/run).
# The driver prints a Markdown table and a JSON document between marker lines;
# this script cuts them out of its output (the sandbox sees the host read-only)
# and writes, in the repository:
#   build/bench/boot.md     the table
#   build/bench/boot.json   every raw sample
#   build/bench/boot.log    the driver's whole output
# In the sandbox the whole run is bounded by $CABIN_BENCH_SANDBOX_TIMEOUT seconds
# (default 1800; raise it for many --runs).
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

cabin="$repo/target/release/cabin"
[[ -x "$cabin" ]] || die "$cabin is missing: run 'cargo build --release' (make bench does)"
for var in CABIN_VMLINUX CABIN_TEST_INITRAMFS; do
    [[ -n "${!var:-}" ]] || die "resources/paths.sh did not set $var"
    [[ -f "${!var}" ]] || die "$var=${!var} does not exist: run 'make artifacts' (make bench does)"
done
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is not installed (resources/deps.sh)"

# The distribution's Python: it exists at the same path inside the sandbox and
# needs no writable home (unlike a pyenv shim).
python=/usr/bin/python3
[[ -x "$python" ]] || python="$(command -v python3)" || die "python3 is not installed"

host_cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain 2>/dev/null | head -n 1)" ]]; then
    commit="$commit+dirty"
fi

# shellcheck disable=SC2206 # CABIN_BENCH_ARGS is split into words on purpose
extra=(${CABIN_BENCH_ARGS:-})
args=(
    --cabin "$cabin"
    --kernel "$CABIN_VMLINUX"
    --initrd "$CABIN_TEST_INITRAMFS"
    --host-cpu "${host_cpu:-unknown}"
    --commit "$commit"
    "${extra[@]}" "$@"
)

out="$repo/build/bench"
mkdir -p "$out"
log="$out/boot.log"
rm -f "$out/boot.md" "$out/boot.json"

set +e
if "$cabin" check >/dev/null 2>&1; then
    echo "bench: this host's KVM boots guests: measuring directly" >&2
    "$python" "$here/bootbench.py" --environment direct "${args[@]}" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
else
    echo "bench: this host's KVM cannot boot Linux natively: measuring inside the nested sandbox" >&2
    echo "bench: (nested numbers are not hardware numbers: compare the cabin/QEMU ratios)" >&2
    resources/sandbox/run --timeout "${CABIN_BENCH_SANDBOX_TIMEOUT:-1800}" -- \
        "$python" "$here/bootbench.py" --environment nested-sandbox "${args[@]}" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    if [[ "$rc" == 125 ]]; then
        echo "bench: the sandbox itself failed or timed out (status 125); see its messages above" >&2
    fi
fi
set -e

# extract BEGIN END: the lines strictly between two marker lines of the log.
extract() {
    tr -d '\r' <"$log" | awk -v b="$1" -v e="$2" '
        $0 == e { inside = 0 }
        inside { print }
        $0 == b { inside = 1; found = 1 }
        END { exit !found }'
}
md="$(extract '===== BOOTBENCH MARKDOWN BEGIN =====' '===== BOOTBENCH MARKDOWN END =====')" || md=""
json="$(extract '===== BOOTBENCH JSON BEGIN =====' '===== BOOTBENCH JSON END =====')" || json=""
if [[ -z "$md" || -z "$json" ]]; then
    die "the benchmark produced no results (exit status $rc); see $log"
fi
printf '%s\n' "$json" >"$out/boot.json.tmp"
"$python" -c 'import json, sys; json.load(open(sys.argv[1]))' "$out/boot.json.tmp" ||
    die "the JSON results are garbled (console noise?); see $log"
mv "$out/boot.json.tmp" "$out/boot.json"
printf '%s\n' "$md" >"$out/boot.md"

echo
echo "bench: wrote ${out#"$repo"/}/boot.md, boot.json and boot.log"
if [[ "$rc" != 0 ]]; then
    echo "bench: some measurements failed (exit status $rc); see the table and $log" >&2
fi
exit "$rc"
