#!/usr/bin/env bash
# Builds cabin's fuzz targets with cargo-afl and runs each under AFL++ for
# FUZZ_TIME seconds, one after the other, at the lowest CPU priority; then prints a
# table of executions, speed, corpus size and crashes. New crashes are copied to
# tests/fuzz/crashes/<target>/ (commit them once fixed: make test replays them).
#
#   FUZZ_TIME     seconds per target (default 60)
#   FUZZ_TARGETS  space-separated targets (default: all, see src/lib.rs TARGETS)
#   CABIN_CACHE   where cargo-afl and AFL++ are installed (the Makefile sets it)
#
# AFL++'s findings stay in build/fuzz/<target>/ and later runs resume from them.
# Host kernel settings are left alone: the env vars below make AFL++ accept this
# host as it is (crash reports piped to a handler, a CPU frequency governor, other
# processes on the cores).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

# Keep equal to the `afl` dependency in tests/fuzz/Cargo.toml.
AFL_VERSION=0.18.2
ALL_TARGETS="block net console rng vsock mmio http api config cli loader snapshot"
FUZZ_TIME=${FUZZ_TIME:-60}
FUZZ_TARGETS=${FUZZ_TARGETS:-$ALL_TARGETS}
CABIN_CACHE=${CABIN_CACHE:-$HOME/.cache/cabin}
afl_root="$CABIN_CACHE/cargo-afl-$AFL_VERSION"
# cargo-afl builds AFL++ under $XDG_DATA_HOME/afl.rs: keep that in the cache too.
export XDG_DATA_HOME="$afl_root/data"
export PATH="$afl_root/bin:$PATH"
out_root="$repo/build/fuzz"
# Instrumented builds get their own target directory (other RUSTFLAGS).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}/afl"
# Fat LTO over instrumented code only slows the build down. Overflow checks and
# debug assertions on: an arithmetic overflow on hostile input is a finding too.
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
export CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true

case "$FUZZ_TIME" in '' | *[!0-9]*) echo "fuzz: FUZZ_TIME must be seconds, not '$FUZZ_TIME'" >&2; exit 2 ;; esac
for t in $FUZZ_TARGETS; do
    case " $ALL_TARGETS " in *" $t "*) ;; *) echo "fuzz: no target '$t' (targets: $ALL_TARGETS)" >&2; exit 2 ;; esac
done

if [ "$(cargo-afl afl --version 2>/dev/null | awk '{print $2}')" != "$AFL_VERSION" ]; then
    echo "fuzz: installing cargo-afl $AFL_VERSION into $afl_root" >&2
    nice -n 19 cargo install --root "$afl_root" cargo-afl --version "$AFL_VERSION" --locked
fi
if ! compgen -G "$XDG_DATA_HOME/afl.rs/*/afl.rs-$AFL_VERSION/afl/bin/afl-fuzz" >/dev/null; then
    echo "fuzz: building AFL++ (once) into $XDG_DATA_HOME" >&2
    nice -n 19 cargo afl config --build
fi

echo "fuzz: building the targets with AFL++ instrumentation" >&2
bins=()
for t in $FUZZ_TARGETS; do bins+=(--bin "$t"); done
nice -n 19 cargo afl build --release -p cabin-fuzz --features afl "${bins[@]}"

export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
# Other developers share the cores: no pinning, and resume earlier findings.
export AFL_NO_AFFINITY=1 AFL_AUTORESUME=1 AFL_SKIP_CRASHES=1

stat_of() { awk -F' *: *' -v k="$2" '$1 == k { print $2 }' "$1" 2>/dev/null || true; }

rows=()
found=0
for t in $FUZZ_TARGETS; do
    out="$out_root/$t"
    mkdir -p "$out"
    echo "fuzz: $t for ${FUZZ_TIME}s" >&2
    rc=0
    nice -n 19 cargo afl fuzz -i "$here/corpus/$t" -o "$out" -V "$FUZZ_TIME" -t 1000 \
        -- "$CARGO_TARGET_DIR/release/$t" >"$out/afl.log" 2>&1 || rc=$?
    stats="$out/default/fuzzer_stats"
    if [ "$rc" -ne 0 ] || [ ! -f "$stats" ]; then
        echo "fuzz: afl-fuzz failed on $t (status $rc); the end of $out/afl.log:" >&2
        tail -n 20 "$out/afl.log" >&2
        exit 1
    fi
    crashes=0
    mkdir -p "$here/crashes/$t"
    for f in "$out"/default/crashes/id:* "$out"/default/hangs/id:*; do
        [ -f "$f" ] || continue
        kind=crash
        case "$f" in */hangs/*) kind=hang ;; esac
        dest="$here/crashes/$t/$kind-$(sha1sum "$f" | cut -c1-16)"
        [ -f "$dest" ] || { cp "$f" "$dest"; echo "fuzz: $t: new $kind input $dest" >&2; }
        crashes=$((crashes + 1))
    done
    found=$((found + crashes))
    rows+=("$(printf '%-8s %12s %10s %8s %8s' "$t" "$(stat_of "$stats" execs_done)" \
        "$(stat_of "$stats" execs_per_sec)" "$(stat_of "$stats" corpus_count)" "$crashes")")
done

printf '\n%-8s %12s %10s %8s %8s\n' target executions execs/s corpus crashes
printf '%s\n' "${rows[@]}"
if [ "$found" -gt 0 ]; then
    echo "fuzz: $found crashing or hanging inputs (copied under tests/fuzz/crashes/)" >&2
fi
