#!/usr/bin/env bash
# Build the cabin busybox root filesystem image from Debian's busybox-static:
# an ext4 image (32 MiB) with busybox and its applet links, a minimal /etc
# and /sbin/init = resources/rootfs/init (a `#!/bin/sh` script: see there
# for the cabin.sh=<base64> command-line protocol and the CABIN-* markers).
#
# Result: $CABIN_CACHE/rootfs-<hash>/busybox.ext4; its path is printed on
# stdout. A rerun with the same inputs does nothing.
#
# Booting it (no initrd): attach it as the first virtio block device and
# give the kernel `root=/dev/vda rw` (`rootfstype=ext4` skips probing other
# filesystem types). The guest kernel needs CONFIG_EXT4_FS=y and
# CONFIG_VIRTIO_BLK=y built in (no modules, no initrd to load them); the
# image uses the default mkfs.ext4 features (extents, 64bit, metadata_csum,
# 1 KiB blocks, journal) which any 6.1 kernel's ext4 reads and writes.
# The image is writable: use a copy, or QEMU's snapshot=on, to keep this
# one pristine.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/..
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

SIZE_MIB=32

ensure_packages busybox-static e2fsprogs file

out="$(rootfs_dir)"
image="$out/busybox.ext4"
if [[ -f "$image" ]]; then
    printf '%s\n' "$image"
    exit 0
fi
lock_artifact "$out"
if [[ -f "$image" ]]; then # built by someone else while we waited
    printf '%s\n' "$image"
    exit 0
fi
[[ "$(id -u)" == 0 ]] || die "building the rootfs image needs root (files owned by root, device nodes)"

note "building busybox rootfs image..."
tmp="$out.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
root="$tmp/root"

# --- the tree ---
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,mnt,root,etc}
chmod 0755 "$root" "$root"/{bin,sbin,usr,usr/bin,usr/sbin,dev,proc,sys,mnt,etc}
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
install -m 0755 /bin/busybox "$root/bin/busybox"
# Our init first: busybox also has an `init` applet at /sbin/init.
install -m 0755 "$CABIN_RESOURCES/rootfs/init" "$root/sbin/init"
# The guest agent, started by init (`cabin exec`, `cabin cp`).
install -m 0755 "$(agent_binary)" "$root/sbin/cabin-agent"
# One symlink per applet, at the path busybox itself reports.
while IFS= read -r applet; do
    [[ -e "$root/$applet" || -L "$root/$applet" ]] || ln -s /bin/busybox "$root/$applet"
done < <("$root/bin/busybox" --list-full)

# The kernel mounts devtmpfs over /dev (CONFIG_DEVTMPFS_MOUNT); these two
# are for a kernel that does not.
mknod -m 0600 "$root/dev/console" c 5 1
mknod -m 0666 "$root/dev/null" c 1 3

printf '%s\n' 'root::0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
    >"$root/etc/passwd"
printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$root/etc/group"
echo cabin >"$root/etc/hostname"
cat >"$root/etc/profile" <<'EOF'
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
export PS1='cabin:\w\$ '
EOF
chmod 0644 "$root"/etc/{passwd,group,hostname,profile}
# Fixed timestamps: the tree does not depend on when it was built.
find "$root" -exec touch -h -d @0 {} +

# --- the image ---
# A UUID derived from the input hash, so a rebuild makes the same filesystem
# identity (and the journal/htree seeds do not vary either).
uuid="$(printf 'cabin-rootfs %s\n' "$(basename "$out")" | sha256sum |
    sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/')"
truncate -s "${SIZE_MIB}M" "$tmp/busybox.ext4"
# -d copies the tree with its owners (root: built as root); root_owner sets
# the owner of the filesystem's own root directory. No blocks reserved for
# root: everything in the guest runs as root anyway.
mkfs.ext4 -q -F -L cabin-rootfs -U "$uuid" -m 0 -E "root_owner=0:0,hash_seed=$uuid" \
    -d "$root" "$tmp/busybox.ext4" >&2 || die "mkfs.ext4 -d failed"
e2fsck -fn "$tmp/busybox.ext4" >/dev/null 2>&1 || die "e2fsck reports errors in the new image"
rm -rf "$root"

mv -T "$tmp" "$out"
printf '%s\n' "$image"
