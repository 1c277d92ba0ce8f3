#!/usr/bin/env bash
# Install the Debian packages every script under resources/ needs, skipping
# those already installed (apt-get update runs only if apt does not know one),
# and make sure apt knows the packages the builds download.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_packages \
    bc bison flex gcc make libelf-dev libssl-dev xz-utils \
    busybox-static cpio gzip kmod e2fsprogs qemu-system-x86 \
    crun python3-matplotlib
# Downloaded by kernel/build.sh and sandbox/build.sh.
ensure_known "$KERNEL_SRC_PKG"
ensure_known linux-image-amd64
