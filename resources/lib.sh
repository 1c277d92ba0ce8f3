# shellcheck shell=bash
# Shared helpers for the scripts under resources/. Source it; do not run it.
#
# Every heavy artifact lives in "$CABIN_CACHE/<name>-<hash>/", where <hash>
# covers everything that went into it: the scripts and config files that
# build it and the versions of the Debian packages it is made from. The hash
# functions below are the only place that knows what those inputs are; build
# scripts and paths.sh all go through them.
#
# This file itself is not hashed (it is shared, and adding a helper or an
# artifact here must not rebuild the kernel); its helpers do not shape what
# the builds produce. If a change here does, bump CABIN_LIB_EPOCH, which
# every hash includes.
CABIN_LIB_EPOCH=1
#
# Nothing in here builds or downloads anything unless a function says so.

# Directory holding this file (resources/), whatever the caller's cwd.
CABIN_RESOURCES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CABIN_CACHE="${CABIN_CACHE:-${HOME:-/root}/.cache/cabin}"

# --- messages ---------------------------------------------------------------

# die MESSAGE...: print an error to stderr and exit 1.
die() {
    printf 'cabin: error: %s\n' "$*" >&2
    exit 1
}

# note MESSAGE...: one-line progress message on stderr.
note() {
    printf 'cabin: %s\n' "$*" >&2
}

# --- Debian packages --------------------------------------------------------

# pkg_installed_version PKG: version of PKG if it is installed, else nothing.
pkg_installed_version() {
    dpkg-query -W -f='${db:Status-Status} ${Version}\n' "$1" 2>/dev/null |
        awk '$1 == "installed" { print $2 }'
}

# apt_cache ARGS...: apt-cache with a package cache file of our own. This
# machine's apt config keeps no cache file, which makes every apt-cache call
# re-read all package lists (seconds). apt checks the file against the lists
# and the installed packages and rebuilds it (in memory if it cannot write,
# e.g. inside the sandbox, where the host is read-only).
apt_cache() {
    local dir="$CABIN_CACHE/apt"
    mkdir -p "$dir" 2>/dev/null || true
    if [[ -w "$dir" || -f "$dir/pkgcache.bin" ]]; then
        apt-cache -o Dir::Cache::pkgcache="$dir/pkgcache.bin" \
            -o Dir::Cache::srcpkgcache="$dir/srcpkgcache.bin" "$@"
    else
        apt-cache "$@"
    fi
}

# pkg_candidate_version PKG: the version apt would install/download now.
# Fails (prints nothing, returns 1) when the apt lists do not know PKG.
pkg_candidate_version() {
    local v
    v="$(apt_cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" { print $2 }')"
    [[ -n "$v" && "$v" != "(none)" ]] || return 1
    printf '%s\n' "$v"
}

# pkg_version PKG: installed version, else candidate version. Used for the
# tools whose files end up in an artifact (busybox-static, ...).
pkg_version() {
    pkg_installed_version "$1" | grep . || pkg_candidate_version "$1" ||
        die "package $1 is neither installed nor known to apt (run resources/deps.sh)"
}

_cabin_apt_updated=0
# apt_update_once: run `apt-get update` at most once per script run.
apt_update_once() {
    if [[ "$_cabin_apt_updated" == 0 ]]; then
        note "refreshing apt package lists..."
        apt-get update -qq >&2 || die "apt-get update failed"
        _cabin_apt_updated=1
    fi
}

# ensure_packages PKG...: install the packages that are not installed yet.
# Runs `apt-get update` first only if apt does not know one of them.
ensure_packages() {
    local p missing=()
    for p in "$@"; do
        [[ -n "$(pkg_installed_version "$p")" ]] || missing+=("$p")
    done
    [[ ${#missing[@]} -gt 0 ]] || return 0
    for p in "${missing[@]}"; do
        pkg_candidate_version "$p" >/dev/null || { apt_update_once; break; }
    done
    [[ "$(id -u)" == 0 ]] || die "missing packages (${missing[*]}); install them as root"
    note "installing ${missing[*]}..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
}

# ensure_known PKG: make sure apt knows a candidate for PKG (for downloads).
ensure_known() {
    pkg_candidate_version "$1" >/dev/null && return 0
    apt_update_once
    pkg_candidate_version "$1" >/dev/null || die "apt knows no package named $1"
}

# apt_download PKG VERSION DIR: fetch PKG=VERSION's .deb into DIR and print
# the path of the .deb.
apt_download() {
    local pkg="$1" ver="$2" dir="$3" dl deb
    # apt downloads as the unprivileged _apt user, which cannot enter /root:
    # fetch into a scratch directory it can write, then move the file.
    dl="$(mktemp -d)"
    chmod 777 "$dl"
    (cd "$dl" && apt-get download -qq "$pkg=$ver" >&2) || {
        rm -rf "$dl"
        die "apt-get download $pkg=$ver failed"
    }
    deb="$(find "$dl" -maxdepth 1 -name "${pkg}_*.deb" | head -n 1)"
    [[ -n "$deb" ]] || die "apt-get download $pkg=$ver produced no .deb"
    mkdir -p "$dir"
    mv "$deb" "$dir/"
    rm -rf "$dl"
    printf '%s/%s\n' "$dir" "$(basename "$deb")"
}

# outer_kernel_pkg: the linux-image-6.1.0-*-amd64 package that
# linux-image-amd64 depends on now (the non-cloud flavour).
outer_kernel_pkg() {
    local p
    # `depends` (the candidate's) needs only apt's binary cache; `show`
    # would read the package lists themselves and take much longer.
    p="$(apt_cache depends linux-image-amd64 2>/dev/null | awk '
        $1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ && p == "" { p = $2 }
        END { print p }')"
    [[ -n "$p" ]] || return 1
    printf '%s\n' "$p"
}

# --- input hashes -----------------------------------------------------------

# hash_inputs [file:PATH | str:TEXT]...: a short hash over the named files'
# contents (by path relative to resources/) and the given strings.
hash_inputs() {
    local a
    for a in "$@"; do
        case "$a" in
            file:*)
                local f="${a#file:}"
                [[ -f "$CABIN_RESOURCES/$f" ]] || die "hash input $f is missing"
                printf 'file %s %s\n' "$f" "$(sha256sum <"$CABIN_RESOURCES/$f" | cut -d' ' -f1)"
                ;;
            str:*) printf 'str %s\n' "${a#str:}" ;;
            *) die "hash_inputs: bad argument $a" ;;
        esac
    done | sha256sum | cut -c1-16
}

# Source package for the guest kernel, and the toolchain that compiles it.
KERNEL_SRC_PKG=linux-source-6.1

kernel_hash() {
    local src_ver gcc_ver ld_ver
    src_ver="$(pkg_candidate_version "$KERNEL_SRC_PKG")" ||
        die "apt does not know $KERNEL_SRC_PKG (run resources/deps.sh)"
    gcc_ver="$(gcc -dumpfullversion 2>/dev/null || echo none)"
    ld_ver="$(ld --version 2>/dev/null | sed -n 1p)"
    hash_inputs "str:epoch=$CABIN_LIB_EPOCH" file:kernel/build.sh file:kernel/microvm.config \
        "str:$KERNEL_SRC_PKG=$src_ver" "str:gcc=$gcc_ver" "str:ld=$ld_ver"
}

# cabin-agent goes into every guest image. The images are keyed by its sources
# (and the compiler), not by its binary, so paths.sh can name them before
# anything is built; the build scripts copy the binary `make agent` made.
agent_hash() {
    local rustc_ver
    rustc_ver="$(rustc --version 2>/dev/null || echo none)"
    {
        printf 'rustc %s\n' "$rustc_ver"
        (cd "$CABIN_RESOURCES/agent" && find . -type f \( -name '*.rs' -o -name Cargo.toml \) |
            LC_ALL=C sort | xargs sha256sum)
    } | sha256sum | cut -c1-16
}

# The static cabin-agent binary `make agent` installs (CABIN_AGENT overrides).
agent_binary() {
    local bin="${CABIN_AGENT:-$CABIN_RESOURCES/../target/release/cabin-agent}"
    [[ -x "$bin" ]] || die "no cabin-agent binary at $bin: run \`make agent\` first (it builds the static guest agent)"
    file -b "$bin" | grep -Eq 'statically linked|static-pie linked' ||
        die "$bin is not statically linked: build it with \`make agent\` (a busybox guest has no shared libraries)"
    printf '%s\n' "$bin"
}

initramfs_hash() {
    local bb
    bb="$(pkg_version busybox-static)" || return 1
    hash_inputs "str:epoch=$CABIN_LIB_EPOCH" file:initramfs/build.sh file:initramfs/init \
        file:initramfs/test-init "str:busybox-static=$bb" "str:agent=$(agent_hash)"
}

sandbox_hash() {
    local kpkg kver bb kmod
    kpkg="$(outer_kernel_pkg)" || die "apt does not know linux-image-amd64 (run resources/deps.sh)"
    kver="$(pkg_candidate_version "$kpkg")" || die "apt does not know $kpkg"
    bb="$(pkg_version busybox-static)" || return 1
    kmod="$(pkg_version kmod)" || return 1
    hash_inputs "str:epoch=$CABIN_LIB_EPOCH" file:sandbox/build.sh file:sandbox/init \
        "str:$kpkg=$kver" "str:busybox-static=$bb" "str:kmod=$kmod"
}

rootfs_hash() {
    local bb e2fs
    bb="$(pkg_version busybox-static)" || return 1
    e2fs="$(pkg_version e2fsprogs)" || return 1
    hash_inputs "str:epoch=$CABIN_LIB_EPOCH" file:rootfs/build.sh file:rootfs/init \
        "str:busybox-static=$bb" "str:e2fsprogs=$e2fs" "str:agent=$(agent_hash)"
}

# The Debian image (rootfs/debian.sh): debootstrap's minbase variant of
# $DEBIAN_SUITE plus $DEBIAN_INCLUDE, with Debian's kernel installed. Its
# hash covers the script, the tools that make it, the versions that the suite
# itself (not -updates or -security: debootstrap uses only the suite) has of
# a few key packages (a point release changes at least one of them) and the
# kernel packages' versions.
DEBIAN_SUITE=bookworm
DEBIAN_INCLUDE=systemd-sysv,udev,iproute2,dbus,initramfs-tools
DEBIAN_KEY_PKGS=(base-files libc6 systemd udev dbus iproute2 initramfs-tools)

# debian_kernel_pkgs: "PKG=VERSION" lines for Debian's kernel as installed
# in the Debian image: the linux-image-amd64 metapackage and the versioned
# package it depends on now (the one the sandbox boots too).
debian_kernel_pkgs() {
    local kpkg kver mver
    kpkg="$(outer_kernel_pkg)" || return 1
    kver="$(pkg_candidate_version "$kpkg")" || return 1
    mver="$(pkg_candidate_version linux-image-amd64)" || return 1
    printf 'linux-image-amd64=%s\n%s=%s\n' "$mver" "$kpkg" "$kver"
}

# debian_kernel_release: the kernel release of that package (6.1.0-N-amd64).
debian_kernel_release() {
    local kpkg
    kpkg="$(outer_kernel_pkg)" || return 1
    printf '%s\n' "${kpkg#linux-image-}"
}

# debian_suite_versions PKG...: "PKG=VERSION" lines for the versions in
# $DEBIAN_SUITE/main, from apt's lists; fails if one of them is unknown.
debian_suite_versions() {
    local lines p
    lines="$(apt_cache madison "$@" 2>/dev/null | awk -F'|' -v s=" $DEBIAN_SUITE/main " '
        index($3, s) {
            gsub(/ /, "", $1); gsub(/ /, "", $2)
            if (!($1 in seen)) { seen[$1] = 1; print $1 "=" $2 }
        }')"
    for p in "$@"; do
        grep -q "^$p=" <<<"$lines" || return 1
    done
    printf '%s\n' "$lines"
}

debian_hash() {
    local dbs e2fs vers kpkgs
    dbs="$(pkg_version debootstrap)" || return 1
    e2fs="$(pkg_version e2fsprogs)" || return 1
    vers="$(debian_suite_versions "${DEBIAN_KEY_PKGS[@]}")" ||
        die "apt does not know ${DEBIAN_KEY_PKGS[*]} in $DEBIAN_SUITE (run resources/deps.sh)"
    kpkgs="$(debian_kernel_pkgs)" || die "apt does not know linux-image-amd64 (run resources/deps.sh)"
    hash_inputs "str:epoch=$CABIN_LIB_EPOCH" file:rootfs/debian.sh "str:debootstrap=$dbs" \
        "str:e2fsprogs=$e2fs" "str:$DEBIAN_SUITE $DEBIAN_INCLUDE" "str:$vers" "str:$kpkgs" \
        "str:agent=$(agent_hash)"
}

# The artifact directories. (Command substitutions do not inherit `set -e`,
# hence the explicit checks: a failed hash must not yield ".../kernel-".)
kernel_dir() {
    local h
    h="$(kernel_hash)" || return 1
    printf '%s/kernel-%s\n' "$CABIN_CACHE" "$h"
}
initramfs_dir() {
    local h
    h="$(initramfs_hash)" || return 1
    printf '%s/initramfs-%s\n' "$CABIN_CACHE" "$h"
}
sandbox_dir() {
    local h
    h="$(sandbox_hash)" || return 1
    printf '%s/sandbox-%s\n' "$CABIN_CACHE" "$h"
}
rootfs_dir() {
    local h
    h="$(rootfs_hash)" || return 1
    printf '%s/rootfs-%s\n' "$CABIN_CACHE" "$h"
}
debian_dir() {
    local h
    h="$(debian_hash)" || return 1
    printf '%s/debian-%s\n' "$CABIN_CACHE" "$h"
}

# --- cache helpers ----------------------------------------------------------

# lock_artifact DIR: take an exclusive lock for building DIR (held until the
# script exits), so concurrent builds of the same artifact wait for each other.
lock_artifact() {
    mkdir -p "$CABIN_CACHE"
    exec 9>"$1.lock"
    flock 9 || die "cannot lock $1.lock"
}
