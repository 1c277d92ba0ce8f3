#!/usr/bin/env bash
# Print `export` lines for the artifact paths, computed from the same input
# hashes the build scripts use, without building anything:
#   eval "$(resources/paths.sh)"
# The files exist only once the matching build script has run:
#   CABIN_VMLINUX, CABIN_BZIMAGE     resources/kernel/build.sh
#   CABIN_INITRAMFS, CABIN_TEST_INITRAMFS   resources/initramfs/build.sh
#   CABIN_SANDBOX_DIR                resources/sandbox/build.sh (or sandbox/run)
#   CABIN_ROOTFS                     resources/rootfs/build.sh (busybox, root=/dev/vda rw)
#   CABIN_DEBIAN_ROOTFS              resources/rootfs/debian.sh (Debian 12 + systemd)
#   CABIN_DEBIAN_VMLINUZ, CABIN_DEBIAN_INITRD   the same: Debian's own kernel
#                                    (bzImage) and its initramfs-tools initrd
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

kernel="$(kernel_dir)"
initramfs="$(initramfs_dir)"
sandbox="$(sandbox_dir)"
printf 'export CABIN_VMLINUX=%q\n' "$kernel/vmlinux"
printf 'export CABIN_BZIMAGE=%q\n' "$kernel/bzImage"
printf 'export CABIN_INITRAMFS=%q\n' "$initramfs/initramfs.cpio.gz"
printf 'export CABIN_TEST_INITRAMFS=%q\n' "$initramfs/test-initramfs.cpio.gz"
printf 'export CABIN_SANDBOX_DIR=%q\n' "$sandbox"
printf 'export CABIN_ROOTFS=%q\n' "$(rootfs_dir)/busybox.ext4"
debian="$(debian_dir)"
printf 'export CABIN_DEBIAN_ROOTFS=%q\n' "$debian/debian.ext4"
printf 'export CABIN_DEBIAN_VMLINUZ=%q\n' "$debian/vmlinuz"
printf 'export CABIN_DEBIAN_INITRD=%q\n' "$debian/initrd.img"
