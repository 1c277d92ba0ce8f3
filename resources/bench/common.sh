# Sourced by the bench scripts (boot.sh, io.sh, containers.sh): the checks they
# share and the one place that decides where a benchmark driver runs.
#
# bench_init [--no-qemu]
#                cd to the repository and set: repo, here (resources/bench),
#                cabin ($CABIN or target/release/cabin), python, host_cpu, commit,
#                out (build/bench), and the artifact paths of resources/paths.sh;
#                die() on what is missing (QEMU too, unless --no-qemu).
# bench_run NAME MARKER TIMEOUT [SANDBOX-OPTION...] -- DRIVER [ARG...]
#                runs `$python DRIVER --environment E ARG...` directly when this
#                host's KVM boots guests (`cabin check` exits 0), else inside the
#                nested sandbox (resources/sandbox/run, bounded by
#                $CABIN_BENCH_SANDBOX_TIMEOUT seconds, default TIMEOUT, and run
#                again, at most 3 times, when the sandbox itself dies; the
#                SANDBOX-OPTIONs, e.g. `--rw DIR`, go to sandbox/run). The driver
#                prints a Markdown report and a JSON document between the lines
#                `===== MARKER MARKDOWN BEGIN|END =====` and
#                `===== MARKER JSON BEGIN|END =====`; they are cut out of its
#                output (the sandbox sees the host read-only) into
#                $out/NAME.md, $out/NAME.json and the whole output $out/NAME.log.
#                Sets rc to the driver's exit status (0 all measurements
#                succeeded, 1 some failed, 2 bad arguments); dies when no
#                results came back.
# bench_finish   prints what was written and exits with rc.
# shellcheck shell=bash

die() {
    printf 'bench: error: %s\n' "$*" >&2
    exit 1
}

bench_init() {
    here="$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)"
    repo="$(cd "$here/../.." && pwd)"
    cd "$repo"
    local paths
    paths="$(resources/paths.sh)" || die "resources/paths.sh failed"
    eval "$paths"
    cabin="${CABIN:-$repo/target/release/cabin}"
    [[ -x "$cabin" ]] || die "$cabin is missing: run 'cargo build --release' (make bench does) or set CABIN"
    if [[ "${1:-}" != --no-qemu ]]; then
        command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is not installed (resources/deps.sh)"
    fi
    # The distribution's Python: it exists at the same path inside the sandbox
    # and needs no writable home (unlike a pyenv shim).
    python=/usr/bin/python3
    [[ -x "$python" ]] || python="$(command -v python3)" || die "python3 is not installed"
    host_cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    host_cpu="${host_cpu:-unknown}"
    commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if [[ -n "$(git status --porcelain 2>/dev/null | head -n 1)" ]]; then
        commit="$commit+dirty"
    fi
    out="$repo/build/bench"
    mkdir -p "$out"
}

# require_artifacts VAR...: each names an artifact path that must exist.
require_artifacts() {
    local var
    for var in "$@"; do
        [[ -n "${!var:-}" ]] || die "resources/paths.sh did not set $var"
        [[ -f "${!var}" ]] || die "$var=${!var} does not exist: run 'make artifacts' (make bench does)"
    done
}

bench_run() {
    local name="$1" marker="$2" timeout="$3"
    shift 3
    # The checkout itself is shared as well: a clone under /tmp (a tmpfs inside
    # the sandbox) would otherwise be invisible there.
    local sandbox_opts=(--rw "$repo")
    while [[ $# -gt 0 && "$1" != -- ]]; do
        sandbox_opts+=("$1")
        shift
    done
    [[ "${1:-}" == -- ]] || die "bench_run: no -- before the driver"
    shift
    local driver="$1"
    shift
    bench_name="$name"
    log="$out/$name.log"
    rm -f "$out/$name.md" "$out/$name.json"

    set +e
    if "$cabin" check >/dev/null 2>&1; then
        echo "bench: this host's KVM boots guests: measuring directly" >&2
        "$python" "$driver" --environment direct "$@" 2>&1 | tee "$log"
        rc=${PIPESTATUS[0]}
    else
        echo "bench: this host's KVM cannot boot Linux natively: measuring inside the nested sandbox" >&2
        echo "bench: (nested numbers are not hardware numbers: compare the ratios)" >&2
        local attempt
        for attempt in 1 2 3; do
            resources/sandbox/run --timeout "${CABIN_BENCH_SANDBOX_TIMEOUT:-$timeout}" "${sandbox_opts[@]}" -- \
                "$python" "$driver" --environment nested-sandbox "$@" 2>&1 | tee "$log"
            rc=${PIPESTATUS[0]}
            [[ "$rc" == 125 ]] || break
            echo "bench: the sandbox itself failed or timed out (status 125: its QEMU TCG machine, not the benchmark); see its messages above ($attempt/3)" >&2
        done
    fi
    set -e

    local md json
    md="$(bench_extract "===== $marker MARKDOWN BEGIN =====" "===== $marker MARKDOWN END =====")" || md=""
    json="$(bench_extract "===== $marker JSON BEGIN =====" "===== $marker JSON END =====")" || json=""
    if [[ -z "$md" || -z "$json" ]]; then
        die "the benchmark produced no results (exit status $rc); see $log"
    fi
    printf '%s\n' "$json" >"$out/$name.json.tmp"
    "$python" -c 'import json, sys; json.load(open(sys.argv[1]))' "$out/$name.json.tmp" ||
        die "the JSON results are garbled (console noise?); see $log"
    mv "$out/$name.json.tmp" "$out/$name.json"
    printf '%s\n' "$md" >"$out/$name.md"
}

# bench_extract BEGIN END: the lines strictly between two marker lines of the log.
bench_extract() {
    tr -d '\r' <"$log" | awk -v b="$1" -v e="$2" '
        $0 == e { inside = 0 }
        inside { print }
        $0 == b { inside = 1; found = 1 }
        END { exit !found }'
}

bench_finish() {
    echo
    echo "bench: wrote ${out#"$repo"/}/$bench_name.md, $bench_name.json and $bench_name.log"
    if [[ "$rc" != 0 ]]; then
        echo "bench: some measurements failed (exit status $rc); see the report and $log" >&2
    fi
    exit "$rc"
}
