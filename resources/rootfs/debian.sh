#!/usr/bin/env bash
# Build the cabin Debian guest image: Debian 12 (bookworm) with systemd,
# made by `debootstrap --variant=minbase --include=$DEBIAN_INCLUDE` from the
# mirror that this machine's apt sources name for the suite (or
# $CABIN_DEBIAN_MIRROR; there is no built-in default), trimmed, and set up
# for a microVM:
#   - root autologin on the serial and virtio consoles (a drop-in for
#     serial-getty@.service; systemd's getty generator starts it on every
#     console= device and on hvc0 whenever that exists)
#   - /etc/fstab mounts /dev/vda at /, hostname cabin-debian, an empty
#     /etc/machine-id (each boot of a pristine copy makes its own)
#   - timers and services that only cost boot time in a test VM are masked
#   - cabin-boot-marker.service waits for the boot to finish and prints
#     `CABIN-DEBIAN-UPTIME=<seconds>` and then `CABIN-DEBIAN-STATE=<state>`
#     (running, or degraded if a unit failed) on /dev/console.
#   - Debian's own kernel (linux-image-amd64) installed with dpkg in the
#     chroot: its modules stay in the image (trimmed to what a microVM can
#     use), and the initramfs that its postinst makes with initramfs-tools
#     (MODULES=list: virtio_mmio, virtio_blk, virtio_net, virtio_console,
#     ext4) is moved out of the image together with vmlinuz.
#
# Result, in $CABIN_CACHE/debian-<hash>/: debian.ext4, vmlinuz (Debian's
# bzImage, untouched), initrd.img, kernel-version, packages.txt (the
# installed package versions); the image path is printed on stdout. A rerun
# with the same inputs does nothing. Building needs root and the network
# (the .debs are kept in $CABIN_CACHE/debian-debs for rebuilds).
#
# Booting it with Debian's kernel: `--kernel vmlinuz --initrd initrd.img`,
# command line `console=ttyS0 root=/dev/vda rw`; the kernel finds the
# virtio-mmio devices only through ACPI (it has no virtio_mmio.device=).
#
# Booting it with the project's kernel (no initrd): first virtio block
# device, kernel command line `root=/dev/vda rw` (`rootfstype=ext4` skips
# probing other types). The
# guest kernel needs, built in: EXT4_FS and VIRTIO_BLK; and for systemd
# (beyond what resources/kernel/microvm.config already has) at least
#   CONFIG_CGROUPS CONFIG_INOTIFY_USER CONFIG_FHANDLE
# (without CGROUPS systemd freezes: "Failed to mount API filesystems"),
# CONFIG_BASE_FULL for the state `running` rather than `degraded`
# (Debian's sysctl.d/50-pid-max.conf), and to quiet systemd's warnings:
#   AUTOFS_FS TMPFS_POSIX_ACL TMPFS_XATTR EXT4_FS_POSIX_ACL NAMESPACES
#   UTS_NS IPC_NS PID_NS NET_NS USER_NS SYSVIPC POSIX_MQUEUE SECCOMP
#   SECCOMP_FILTER BPF_SYSCALL CGROUP_BPF KCMP DMI DMIID
# The image is writable: boot a copy, or use QEMU's snapshot=on.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/..
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

HOSTNAME_=cabin-debian
MIN_SIZE_MIB=200

# Units masked in the image: idle-priority or periodic jobs that only slow
# a short-lived test VM down (e2scrub_reap alone cost 4-12 s per boot), and
# first-boot helpers that would wait for input on the console.
MASK_UNITS=(
    e2scrub_reap.service e2scrub_all.timer e2scrub_all.service
    apt-daily.timer apt-daily.service apt-daily-upgrade.timer apt-daily-upgrade.service
    dpkg-db-backup.timer dpkg-db-backup.service
    fstrim.timer fstrim.service
    systemd-timesyncd.service
    systemd-networkd-wait-online.service
    systemd-firstboot.service
)

ensure_packages debootstrap e2fsprogs debian-archive-keyring file
ensure_known linux-image-amd64

# debian_sources: "URI SUITE" for each deb source of $DEBIAN_SUITE,
# $DEBIAN_SUITE-updates and $DEBIAN_SUITE-security with component main in
# this machine's apt configuration (one-line .list files and deb822 .sources
# files), in the order apt reads them. The image is built from the URI of
# $DEBIAN_SUITE itself and its own apt sources list all of them.
debian_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$f" ]] || continue
        # deb [options] URI SUITE COMPONENT...
        awk -v s="$DEBIAN_SUITE" '
            $1 != "deb" { next }
            {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                su = $(i + 1)
                if (su != s && su != s "-updates" && su != s "-security") next
                for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i, su; next }
            }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        # Paragraphs of "Field: value" lines.
        awk -v s="$DEBIAN_SUITE" '
            function has(list, word,   n, a, k) {
                n = split(list, a, /[ \t]+/)
                for (k = 1; k <= n; k++) if (a[k] == word) return 1
                return 0
            }
            function flush(   n, su, k) {
                if (has(f["types"], "deb") && has(f["components"], "main") &&
                    tolower(f["enabled"]) != "no") {
                    split(f["uris"], u, /[ \t]+/)
                    n = split(f["suites"], su, /[ \t]+/)
                    for (k = 1; k <= n; k++)
                        if (su[k] == s || su[k] == s "-updates" || su[k] == s "-security")
                            print u[1], su[k]
                }
                delete f
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            /^[A-Za-z-]+:/ {
                k = tolower(substr($0, 1, index($0, ":") - 1))
                v = substr($0, index($0, ":") + 1)
                gsub(/^[ \t]+|[ \t]+$/, "", v)
                f[k] = v
            }
            END { flush() }' "$f"
    done | awk '$1 ~ /^(https?|file):\/\// && !seen[$2]++'
}

# debian_mirror SOURCES: the URI for $DEBIAN_SUITE itself, from
# CABIN_DEBIAN_MIRROR if set, else from SOURCES (debian_sources' output).
# No fallback: the project names no mirror; a host without one says so.
debian_mirror() {
    local uri
    if [[ -n "${CABIN_DEBIAN_MIRROR:-}" ]]; then
        printf '%s\n' "$CABIN_DEBIAN_MIRROR"
        return
    fi
    uri="$(awk -v s="$DEBIAN_SUITE" '$2 == s { print $1; exit }' <<<"$1")"
    [[ -n "$uri" ]] || die "no Debian mirror in this host's apt sources: set CABIN_DEBIAN_MIRROR=<uri>"
    printf '%s\n' "$uri"
}

out="$(debian_dir)"
image="$out/debian.ext4"
if [[ -f "$image" ]]; then
    printf '%s\n' "$image"
    exit 0
fi
lock_artifact "$out"
if [[ -f "$image" ]]; then # built by someone else while we waited
    printf '%s\n' "$image"
    exit 0
fi
[[ "$(id -u)" == 0 ]] || die "building the Debian image needs root (debootstrap)"
agent="$(agent_binary)"

tmp="$out.tmp"
root="$tmp/root"

# unmount_under DIR: unmount whatever is mounted at or below DIR (debootstrap
# mounts /proc and /sys in the target; a killed run leaves them behind, and
# rm -rf must never walk into them).
unmount_under() {
    local m
    [[ -d "$1" ]] || return 0
    # Deepest first.
    findmnt -rn -o TARGET | awk -v d="$(realpath "$1")" 'index($0, d) == 1' | sort -r |
        while IFS= read -r m; do umount -l "$m" || true; done
}
# shellcheck disable=SC2317 # called by the trap
cleanup() { unmount_under "$tmp"; }
trap cleanup EXIT

unmount_under "$tmp"
rm -rf --one-file-system "$tmp"
mkdir -p "$tmp" "$CABIN_CACHE/debian-debs"

# --- debootstrap ---
sources="$(debian_sources)"
mirror="$(debian_mirror "$sources")"
log="$tmp/debootstrap.log"
note "debootstrap $DEBIAN_SUITE from $mirror (1-3 minutes; log: $log)..."
start=$SECONDS
debootstrap --variant=minbase --include="$DEBIAN_INCLUDE" \
    --cache-dir="$CABIN_CACHE/debian-debs" \
    "$DEBIAN_SUITE" "$root" "$mirror" >"$log" 2>&1 || {
    tail -n 30 "$log" >&2
    die "debootstrap failed (full log: $log)"
}
unmount_under "$root"
note "debootstrap done in $((SECONDS - start)) s; configuring..."

# --- trim: documentation, manuals, translations, caches, logs ---
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/{man,info,lintian,linda}/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
rm -rf "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/lib/apt/lists/* "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
# Keep packages installed later in the guest trimmed too.
cat >"$root/etc/dpkg/dpkg.cfg.d/01-cabin-nodoc" <<'EOF'
# cabin: no documentation, manuals or translations in this image.
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
EOF

# --- Debian's own kernel: modules in the image, vmlinuz and initrd beside it ---
# The image carries /lib/modules for the kernel (udev loads e.g. the ACPI
# power button's driver from there) minus what no microVM has (sound, GPUs,
# USB, SCSI, wireless, hardware NICs, most filesystems): dpkg path filters,
# so a kernel installed later in the guest is trimmed the same way.
cat >"$root/etc/dpkg/dpkg.cfg.d/02-cabin-modules" <<'EOF'
# cabin: no modules for hardware a microVM does not have.
path-exclude=/lib/modules/*/kernel/sound/*
path-exclude=/lib/modules/*/kernel/drivers/*
path-include=/lib/modules/*/kernel/drivers/acpi/*
path-include=/lib/modules/*/kernel/drivers/base/*
path-include=/lib/modules/*/kernel/drivers/block/*
path-include=/lib/modules/*/kernel/drivers/char/*
path-include=/lib/modules/*/kernel/drivers/cpufreq/*
path-include=/lib/modules/*/kernel/drivers/crypto/*
path-include=/lib/modules/*/kernel/drivers/dax/*
path-include=/lib/modules/*/kernel/drivers/input/*
path-include=/lib/modules/*/kernel/drivers/md/*
path-include=/lib/modules/*/kernel/drivers/net/*
path-exclude=/lib/modules/*/kernel/drivers/net/*/*
path-include=/lib/modules/*/kernel/drivers/net/bonding/*
path-include=/lib/modules/*/kernel/drivers/net/team/*
path-include=/lib/modules/*/kernel/drivers/net/vxlan/*
path-include=/lib/modules/*/kernel/drivers/net/ipvlan/*
path-include=/lib/modules/*/kernel/drivers/net/wireguard/*
path-include=/lib/modules/*/kernel/drivers/nvdimm/*
path-include=/lib/modules/*/kernel/drivers/platform/*
path-include=/lib/modules/*/kernel/drivers/ptp/*
path-include=/lib/modules/*/kernel/drivers/pps/*
path-include=/lib/modules/*/kernel/drivers/thermal/*
path-include=/lib/modules/*/kernel/drivers/tty/*
path-include=/lib/modules/*/kernel/drivers/vhost/*
path-include=/lib/modules/*/kernel/drivers/virt/*
path-include=/lib/modules/*/kernel/drivers/virtio/*
path-include=/lib/modules/*/kernel/drivers/watchdog/*
path-exclude=/lib/modules/*/kernel/fs/*/*
path-include=/lib/modules/*/kernel/fs/9p/*
path-include=/lib/modules/*/kernel/fs/autofs/*
path-include=/lib/modules/*/kernel/fs/efivarfs/*
path-include=/lib/modules/*/kernel/fs/erofs/*
path-include=/lib/modules/*/kernel/fs/ext4/*
path-include=/lib/modules/*/kernel/fs/fat/*
path-include=/lib/modules/*/kernel/fs/fscache/*
path-include=/lib/modules/*/kernel/fs/fuse/*
path-include=/lib/modules/*/kernel/fs/isofs/*
path-include=/lib/modules/*/kernel/fs/jbd2/*
path-include=/lib/modules/*/kernel/fs/netfs/*
path-include=/lib/modules/*/kernel/fs/nls/*
path-include=/lib/modules/*/kernel/fs/overlayfs/*
path-include=/lib/modules/*/kernel/fs/quota/*
path-include=/lib/modules/*/kernel/fs/squashfs/*
path-exclude=/lib/modules/*/kernel/net/6lowpan/*
path-exclude=/lib/modules/*/kernel/net/appletalk/*
path-exclude=/lib/modules/*/kernel/net/atm/*
path-exclude=/lib/modules/*/kernel/net/ax25/*
path-exclude=/lib/modules/*/kernel/net/batman-adv/*
path-exclude=/lib/modules/*/kernel/net/bluetooth/*
path-exclude=/lib/modules/*/kernel/net/can/*
path-exclude=/lib/modules/*/kernel/net/ieee802154/*
path-exclude=/lib/modules/*/kernel/net/mac80211/*
path-exclude=/lib/modules/*/kernel/net/mac802154/*
path-exclude=/lib/modules/*/kernel/net/netrom/*
path-exclude=/lib/modules/*/kernel/net/nfc/*
path-exclude=/lib/modules/*/kernel/net/phonet/*
path-exclude=/lib/modules/*/kernel/net/rose/*
path-exclude=/lib/modules/*/kernel/net/wireless/*
EOF
# The initramfs (Debian's initramfs-tools, run by the kernel package's
# postinst in the chroot) holds just the listed modules and their
# dependencies: what it takes to find the virtio-mmio devices that ACPI
# describes and to mount /dev/vda.
cat >"$root/etc/initramfs-tools/conf.d/cabin" <<'EOF'
# cabin: a small initramfs for a microVM (the modules are listed in ../modules).
MODULES=list
COMPRESS=gzip
RESUME=none
EOF
cat >>"$root/etc/initramfs-tools/modules" <<'EOF'
# cabin: virtio-mmio devices (described by ACPI) and the root filesystem.
virtio_mmio
virtio_blk
virtio_net
virtio_console
ext4
crc32c_generic
EOF
kdebs=()
while IFS='=' read -r p v; do
    deb="$(apt_download "$p" "$v" "$root/tmp/cabin-kernel")"
    kdebs+=("${deb#"$root"}")
done <<<"$(debian_kernel_pkgs)"
release="$(debian_kernel_release)"
note "installing ${kdebs[*]##*/} in the image (its postinst runs mkinitramfs)..."
start=$SECONDS
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
chroot "$root" env DEBIAN_FRONTEND=noninteractive dpkg -i "${kdebs[@]}" \
    >"$tmp/kernel.log" 2>&1 || {
    tail -n 30 "$tmp/kernel.log" >&2
    die "installing the kernel in the image failed (full log: $tmp/kernel.log)"
}
unmount_under "$root"
rm -rf "$root/tmp/cabin-kernel"
[[ -f "$root/boot/initrd.img-$release" ]] ||
    die "the kernel's postinst made no /boot/initrd.img-$release (log: $tmp/kernel.log)"
note "kernel $release installed in $((SECONDS - start)) s"
# The VMM loads kernel and initrd from the host: move them out of the image
# (with linux-base's /vmlinuz and /initrd.img links to them).
mv "$root/boot/vmlinuz-$release" "$tmp/vmlinuz"
mv "$root/boot/initrd.img-$release" "$tmp/initrd.img"
rm -f "$root/vmlinuz" "$root/vmlinuz.old" "$root/initrd.img" "$root/initrd.img.old"
printf '%s\n' "$release" >"$tmp/kernel-version"
find "$root/var/log" -type f -delete
# shellcheck disable=SC2016 # a dpkg-query format, not a shell expression
chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' >"$tmp/packages.txt"

# --- identity and mounts (debootstrap copied some of these from the host) ---
echo "$HOSTNAME_" >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
    "$HOSTNAME_" >"$root/etc/hosts"
rm -f "$root/etc/resolv.conf"
printf '# cabin: the root filesystem is the first virtio block device.\n/dev/vda\t/\text4\trw,errors=remount-ro\t0\t1\n' \
    >"$root/etc/fstab"
# Empty, not absent: systemd makes a fresh ID at boot (and writes it back
# once / is writable) instead of every copy sharing debootstrap's.
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# The guest's apt uses the mirrors the image was built from.
{
    printf 'deb %s %s main\n' "$mirror" "$DEBIAN_SUITE"
    awk -v s="$DEBIAN_SUITE" '$2 != s { printf "deb %s %s main\n", $1, $2 }' <<<"$sources"
} >"$root/etc/apt/sources.list"

# --- systemd ---
sysd="$root/etc/systemd/system"
# Root autologin on every serial-getty instance (ttyS0, hvc0, ...).
mkdir -p "$sysd/serial-getty@.service.d"
cat >"$sysd/serial-getty@.service.d/cabin-autologin.conf" <<'EOF'
# cabin: log in as root on the serial/virtio console without a password.
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 %I $TERM
EOF
# No getty on the VT: a microVM has no screen. The serial gettys come from
# systemd-getty-generator: one per console= device, plus hvc0 whenever the
# kernel has it. (A static serial-getty@hvc0.service enablement would make
# every boot without a virtio console wait 90 s for dev-hvc0.device.)
rm -f "$sysd/getty.target.wants/getty@tty1.service"
for u in "${MASK_UNITS[@]}"; do
    ln -sfn /dev/null "$sysd/$u"
    rm -f "$sysd"/*.wants/"$u"
done
# An empty machine-id makes systemd treat each boot of a pristine copy as the
# first one, and on a first boot it applies the preset policy to every unit:
# Debian's 90-systemd.preset (and its implicit "enable *") would switch on
# systemd-networkd, getty@tty1 and more. This preset sorts first and enables
# nothing, so the first boot keeps the units exactly as configured here.
mkdir -p "$root/etc/systemd/system-preset"
printf '# cabin: first boots enable no extra units.\ndisable *\n' \
    >"$root/etc/systemd/system-preset/00-cabin.preset"
cat >"$sysd/cabin-boot-marker.service" <<'EOF'
# cabin: report on the console when the boot has finished, for tests.
# Type=simple: the unit is up at once and does not hold the boot open,
# so `is-system-running --wait` sees the end state (a oneshot unit would
# keep the system in `starting`).
[Unit]
Description=cabin boot marker on the console

[Service]
Type=simple
ExecStart=/bin/sh -c 'systemctl is-system-running --wait >/dev/null; echo "CABIN-DEBIAN-UPTIME=$$(cut -d" " -f1 /proc/uptime)" >/dev/console; echo "CABIN-DEBIAN-STATE=$$(systemctl is-system-running)" >/dev/console'

[Install]
WantedBy=multi-user.target
EOF
mkdir -p "$sysd/multi-user.target.wants"
ln -sfn ../cabin-boot-marker.service "$sysd/multi-user.target.wants/cabin-boot-marker.service"
# The guest agent (`cabin exec`, `cabin cp`) on vsock port 10789. Debian's
# kernel has the vsock transport as a module, which udev loads when it finds
# the virtio-vsock device.
mkdir -p "$root/usr/local/sbin"
install -m 0755 "$agent" "$root/usr/local/sbin/cabin-agent"
cat >"$sysd/cabin-agent.service" <<'EOF'
# cabin: the guest agent that `cabin exec` and `cabin cp` talk to over vsock.
[Unit]
Description=cabin guest agent (vsock port 10789)

[Service]
ExecStart=/usr/local/sbin/cabin-agent
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
EOF
ln -sfn ../cabin-agent.service "$sysd/multi-user.target.wants/cabin-agent.service"

# /etc and /var count as up to date with /usr: the ConditionNeedsUpdate=
# units (ldconfig, hwdb and journal catalog rebuilds, sysusers) then skip
# the first boot, which would otherwise spend seconds on them.
stamp="$(date +%s)"
touch -d "@$stamp" "$root/usr"
for d in etc var; do
    printf 'TIMESTAMP_NSEC=%s000000000\n' "$stamp" >"$root/$d/.updated"
    touch -d "@$stamp" "$root/$d/.updated"
done

# --- the image: used space + 40% + 16 MiB (the journal), at least MIN_SIZE_MIB ---
used_kib="$(du -sk --one-file-system "$root" | cut -f1)"
files="$(find "$root" -xdev | wc -l)"
size_mib=$(((used_kib * 14 / 10 + 1023) / 1024 + 16))
((size_mib >= MIN_SIZE_MIB)) || size_mib=$MIN_SIZE_MIB
uuid="$(printf 'cabin-debian %s\n' "$(basename "$out")" | sha256sum |
    sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/')"
truncate -s "${size_mib}M" "$tmp/debian.ext4"
# 4 KiB blocks (mke2fs would pick 1 KiB ones for a "small" filesystem),
# inodes for twice the files there are now, and no blocks reserved for root
# (everything in the guest runs as root anyway).
mkfs.ext4 -q -F -L cabin-debian -U "$uuid" -b 4096 -N $((files * 2 + 4096)) -m 0 \
    -E "root_owner=0:0,hash_seed=$uuid" -d "$root" "$tmp/debian.ext4" >&2 ||
    die "mkfs.ext4 -d failed"
e2fsck -fn "$tmp/debian.ext4" >/dev/null 2>&1 || die "e2fsck reports errors in the new image"
note "debian image: ${used_kib} KiB in $files files, image ${size_mib} MiB"
rm -rf --one-file-system "$root"

trap - EXIT
mv -T "$tmp" "$out"
printf '%s\n' "$image"
