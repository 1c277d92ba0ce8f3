#!/usr/bin/env bash
# Build the cabin guest kernel: Debian's linux-source-6.1, `make tinyconfig`
# plus resources/kernel/microvm.config.
#
# Result: $CABIN_CACHE/kernel-<hash>/{vmlinux,bzImage,config}; the directory
# is printed on stdout. A rerun with the same inputs does nothing.
#
# The unpacked source tree is kept in $CABIN_CACHE/src/ (one per source
# package version) and built out of tree, so a changed config only costs
# the compile, not the download and unpacking.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/..
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

FRAGMENT="$CABIN_RESOURCES/kernel/microvm.config"

ensure_packages bc flex bison libelf-dev libssl-dev make gcc xz-utils cpio
ensure_known "$KERNEL_SRC_PKG"

out="$(kernel_dir)"
if [[ -d "$out" ]]; then
    printf '%s\n' "$out"
    exit 0
fi
lock_artifact "$out"
if [[ -d "$out" ]]; then # built by someone else while we waited
    printf '%s\n' "$out"
    exit 0
fi

# --- unpacked source tree, keyed by the source package version ---
src_ver="$(pkg_candidate_version "$KERNEL_SRC_PKG")"
src="$CABIN_CACHE/src/$KERNEL_SRC_PKG-$src_ver"
if [[ ! -f "$src/Makefile" ]]; then
    note "downloading and unpacking $KERNEL_SRC_PKG $src_ver..."
    tmp_src="$src.tmp"
    rm -rf "$tmp_src"
    mkdir -p "$tmp_src"
    deb="$(apt_download "$KERNEL_SRC_PKG" "$src_ver" "$tmp_src/deb")"
    dpkg-deb -x "$deb" "$tmp_src/deb/root"
    tarball="$(find "$tmp_src/deb/root/usr/src" -maxdepth 1 -name 'linux-source-*.tar.xz' | head -n 1)"
    [[ -n "$tarball" ]] || die "no linux-source tarball in $deb"
    mkdir -p "$tmp_src/tree"
    tar -xJf "$tarball" -C "$tmp_src/tree" --strip-components=1
    rm -rf "$src"
    mv -T "$tmp_src/tree" "$src"
    rm -rf "$tmp_src"
fi

# --- configure and build, out of tree, in a scratch directory ---
build="$out.build"
rm -rf "$build"
mkdir -p "$build"
log="$build/build.log"
kmake() {
    make -C "$src" O="$build" ARCH=x86_64 \
        KBUILD_BUILD_USER=cabin KBUILD_BUILD_HOST=cabin \
        KBUILD_BUILD_TIMESTAMP="$KERNEL_SRC_PKG $src_ver" "$@" >>"$log" 2>&1 ||
        {
            tail -n 40 "$log" >&2
            die "kernel make $* failed (full log: $log)"
        }
}

note "building guest kernel (about 4-5 minutes on 2 cores; log: $log)..."
start=$SECONDS
kmake tinyconfig
# Merge the fragment into the tinyconfig result, then let allnoconfig resolve
# the dependencies with that as the fixed part (what `merge_config.sh -n`
# does): options the fragment makes visible stay off unless asked for, where
# olddefconfig would turn on their defaults (IPv6, PS/2 mice, HID, ...).
"$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "$FRAGMENT" >>"$log" 2>&1 ||
    die "merge_config.sh failed (log: $log)"
mv "$build/.config" "$build/cabin-allno.config"
kmake KCONFIG_ALLCONFIG="$build/cabin-allno.config" allnoconfig

# Every option in the fragment must have ended up exactly as written.
bad=0
while IFS= read -r line; do
    if [[ "$line" =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
        opt="${BASH_REMATCH[1]}"
        if ! grep -qxF "$line" "$build/.config"; then
            got="$(grep -E "^(# )?${opt}[= ]" "$build/.config" || echo "absent")"
            printf 'cabin: kernel option %s: wanted %s, got: %s\n' "$opt" "$line" "$got" >&2
            bad=1
        fi
    elif [[ "$line" =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
        opt="${BASH_REMATCH[1]}"
        # Absent (its dependencies are off) counts as not set.
        if grep -qE "^$opt=" "$build/.config"; then
            printf 'cabin: kernel option %s: wanted not set, got: %s\n' \
                "$opt" "$(grep -E "^$opt=" "$build/.config")" >&2
            bad=1
        fi
    fi
done <"$FRAGMENT"
[[ "$bad" == 0 ]] || die "kernel config does not match $FRAGMENT (see above; config: $build/.config)"

kmake -j"$(nproc)" vmlinux bzImage

tmp_out="$out.tmp"
rm -rf "$tmp_out"
mkdir -p "$tmp_out"
cp "$build/vmlinux" "$tmp_out/vmlinux"
cp "$build/arch/x86/boot/bzImage" "$tmp_out/bzImage"
cp "$build/.config" "$tmp_out/config"
mv -T "$tmp_out" "$out"
rm -rf "$build"
note "guest kernel built in $((SECONDS - start)) s: $out"
printf '%s\n' "$out"
