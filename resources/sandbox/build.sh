#!/usr/bin/env bash
# Prepare the nested sandbox: a Debian kernel with KVM (AMD SVM) for a QEMU TCG
# machine, and an initramfs that loads the modules it needs, mounts this
# host's root over 9p and runs a command there (see sandbox/init, sandbox/run).
#
# Result, in $CABIN_CACHE/sandbox-<hash>/ (printed on stdout):
#   vmlinuz             Debian's kernel image (bzImage)
#   vmlinux             the same kernel uncompressed (ELF with a PVH note)
#   initramfs.cpio.gz   busybox, modules, /init
#   kernel-version      e.g. 6.1.0-57-amd64
# A rerun with the same inputs does nothing.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/..
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

# Modules the init loads (their dependencies are added from modules.dep).
MODULES=(
    irqbypass ccp kvm kvm-amd
    virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
    9pnet 9pnet_virtio netfs fscache 9p
    tun
)

ensure_packages busybox-static cpio gzip kmod xz-utils qemu-system-x86
ensure_known linux-image-amd64

out="$(sandbox_dir)"
if [[ -d "$out" ]]; then
    printf '%s\n' "$out"
    exit 0
fi
lock_artifact "$out"
if [[ -d "$out" ]]; then
    printf '%s\n' "$out"
    exit 0
fi
[[ "$(id -u)" == 0 ]] || die "building the sandbox initramfs needs root (to create /dev/console)"

kpkg="$(outer_kernel_pkg)"
kver="$(pkg_candidate_version "$kpkg")"
note "preparing sandbox ($kpkg $kver)..."
tmp="$out.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"

# --- the kernel package ---
deb="$(apt_download "$kpkg" "$kver" "$tmp/deb")"
dpkg-deb -x "$deb" "$tmp/pkg"
release="${kpkg#linux-image-}"
[[ -d "$tmp/pkg/lib/modules/$release" ]] || die "$deb has no lib/modules/$release"
cp "$tmp/pkg/boot/vmlinuz-$release" "$tmp/vmlinuz"
printf '%s\n' "$release" >"$tmp/kernel-version"

# extract_vmlinux BZIMAGE OUTPUT: find the xz-compressed payload in a bzImage
# and unpack it. Booting the ELF directly (PVH entry) skips decompressing the
# kernel under TCG.
extract_vmlinux() {
    local off
    # Offsets of the xz stream magic (FD 37 7A 58 5A 00).
    # shellcheck disable=SC2013 # one number per line
    for off in $(LC_ALL=C grep -aboP '\xfd7zXZ\x00' "$1" | cut -d: -f1); do
        # xz complains about the bytes after the stream; the check below is
        # what decides whether this offset was the payload.
        tail -c "+$((off + 1))" "$1" | xz -dcq >"$2" 2>/dev/null || true
        if [[ "$(head -c 4 "$2" | od -An -tx1 | tr -d ' ')" == 7f454c46 ]]; then
            return 0
        fi
    done
    return 1
}
extract_vmlinux "$tmp/vmlinuz" "$tmp/vmlinux" || die "cannot extract vmlinux from $tmp/vmlinuz"

# --- module load order, from modules.dep ---
depmod -b "$tmp/pkg" "$release"
moddir="$tmp/pkg/lib/modules/$release"
order=()
for m in "${MODULES[@]}"; do
    lines="$(modprobe -d "$tmp/pkg" -S "$release" --show-depends "$m")" ||
        die "module $m is not in $kpkg"
    while read -r verb path _; do
        # "builtin NAME" lines need nothing; "insmod PATH" lines do.
        [[ "$verb" == insmod ]] || continue
        rel="${path#"$moddir"/}"
        [[ " ${order[*]} " == *" $rel "* ]] || order+=("$rel")
    done <<<"$lines"
done

# --- the initramfs ---
root="$tmp/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,host,work,lib/modules}
cp /bin/busybox "$root/bin/busybox"
while IFS= read -r applet; do
    [[ -e "$root/$applet" ]] || ln -s /bin/busybox "$root/$applet"
done < <("$root/bin/busybox" --list-full)
for rel in "${order[@]}"; do
    mkdir -p "$root/lib/modules/$(dirname "$rel")"
    case "$rel" in
        *.ko) cp "$moddir/$rel" "$root/lib/modules/$rel" ;;
        *.ko.xz) xz -dc "$moddir/$rel" >"$root/lib/modules/${rel%.xz}" ;;
        *) die "unexpected module file $rel" ;;
    esac
    printf '%s\n' "${rel%.xz}"
done >"$root/lib/modules/load-order"
install -m 0755 "$CABIN_RESOURCES/sandbox/init" "$root/init"
mknod -m 600 "$root/dev/console" c 5 1
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
    cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -6n >"$tmp/initramfs.cpio.gz"

rm -rf "$tmp/deb" "$tmp/pkg" "$root"
mv -T "$tmp" "$out"
printf '%s\n' "$out"
