#!/usr/bin/env bash
# Build the cabin guest initramfs images from Debian's busybox-static:
#   initramfs.cpio.gz       interactive shell on the console (init: ./init)
#   test-initramfs.cpio.gz  prints a CABIN-* report and reboots (./test-init)
#
# Result: $CABIN_CACHE/initramfs-<hash>/; the directory is printed on stdout.
# A rerun with the same inputs does nothing.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/..
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

ensure_packages busybox-static cpio gzip file

out="$(initramfs_dir)"
if [[ -d "$out" ]]; then
    printf '%s\n' "$out"
    exit 0
fi
lock_artifact "$out"
if [[ -d "$out" ]]; then
    printf '%s\n' "$out"
    exit 0
fi
[[ "$(id -u)" == 0 ]] || die "building the initramfs needs root (to create /dev/console)"

agent="$(agent_binary)"
note "building guest initramfs images..."
tmp="$out.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"

# make_image INIT OUTPUT: a gzip'd newc cpio with busybox, its applet links
# and INIT as /init.
make_image() {
    local init="$1" output="$2" root
    root="$tmp/root"
    rm -rf "$root"
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,root,etc}
    chmod 1777 "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    # One symlink per applet, at the path busybox itself reports.
    local applet
    while IFS= read -r applet; do
        [[ -e "$root/$applet" ]] || ln -s /bin/busybox "$root/$applet"
    done < <("$root/bin/busybox" --list-full)
    install -m 0755 "$init" "$root/init"
    install -m 0755 "$agent" "$root/sbin/cabin-agent"
    # The kernel opens /dev/console for init before devtmpfs is mounted.
    mknod -m 600 "$root/dev/console" c 5 1
    # Fixed owners and timestamps make the image reproducible.
    find "$root" -exec touch -h -d @0 {} +
    (cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
        cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -9n >"$output"
    rm -rf "$root"
}

make_image "$CABIN_RESOURCES/initramfs/init" "$tmp/initramfs.cpio.gz"
make_image "$CABIN_RESOURCES/initramfs/test-init" "$tmp/test-initramfs.cpio.gz"

mv -T "$tmp" "$out"
printf '%s\n' "$out"
