# cabin: build, run, test, benchmark.
#   make run    build everything and boot the default guest to an interactive shell
#   make test   everything CI checks: lint, unit and KVM smoke tests, end-to-end boots,
#               and a quick checked run of bench-containers
#   make bench  boot time, memory, a distribution's kernel to multi-user, disk, network
#               and lifecycle against QEMU -M microvm
#               API latency/throughput/RSS (FIRECRACKER=path adds it as a peer) and
#               rate-limiter accuracy; snapshots; cabin exec against crun exec and
#               vsock against TCP
#   make soak   100 guests, 30 at once, with disk and network traffic (cabin and QEMU)
#   make fuzz [FUZZ_TIME=s] [FUZZ_TARGETS="block http ..."]  run each fuzz target
#               under AFL++ for FUZZ_TIME seconds (cargo-afl installed into the cache)
#   make bench-containers [QUICK=1]  the same workloads in a host process, crun,
#               cabin and QEMU microvm (QUICK=1: one small run, checked; in make test)
# Heavy artifacts (guest kernel, initramfs, sandbox) are cached in $(CABIN_CACHE),
# keyed by a hash of their inputs.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
export CABIN_CACHE ?= $(HOME)/.cache/cabin
RES := resources
# Paths of the cached artifacts (computed, not built, by paths.sh).
ARTIFACT_ENV = eval "$$($(RES)/paths.sh)"
CABIN_RELEASE := target/release/cabin
# The guest agent, linked statically (glibc's static libc) so it runs in a busybox
# guest with no shared libraries; built for an explicit target so its flags do not
# touch the host binaries' build, then installed next to cabin.
AGENT_TARGET := x86_64-unknown-linux-gnu
AGENT_RELEASE := target/release/cabin-agent

.PHONY: all build agent deps artifacts kernel initramfs rootfs sandbox run test lint unit e2e fuzz bench bench-containers soak check clean

all: build

deps:
	$(RES)/deps.sh

build: agent
	$(CARGO) build --release

agent:
	CARGO_TARGET_$(subst -,_,$(shell echo $(AGENT_TARGET) | tr a-z A-Z))_RUSTFLAGS="-C target-feature=+crt-static" \
	  $(CARGO) build --release -p cabin-agent --target $(AGENT_TARGET)
	mkdir -p $(dir $(AGENT_RELEASE))
	install -m 0755 "$${CARGO_TARGET_DIR:-target}/$(AGENT_TARGET)/release/cabin-agent" $(AGENT_RELEASE)

kernel: deps
	$(RES)/kernel/build.sh

initramfs: deps agent
	$(RES)/initramfs/build.sh

sandbox: deps
	$(RES)/sandbox/build.sh

rootfs: deps agent
	$(RES)/rootfs/build.sh
	$(RES)/rootfs/debian.sh

artifacts: kernel initramfs rootfs sandbox

check: build
	$(CABIN_RELEASE) check || true

# Boots the default guest (project kernel + busybox initramfs) with a shell on this
# terminal: directly when this host's KVM runs guest kernels, else in the sandbox.
run: build artifacts
	$(ARTIFACT_ENV); \
	cmd=("$$PWD/$(CABIN_RELEASE)" run --kernel "$$CABIN_VMLINUX" --initrd "$$CABIN_INITRAMFS" --cmdline "console=ttyS0 reboot=k panic=-1 quiet"); \
	if $(CABIN_RELEASE) check >/dev/null; then exec "$${cmd[@]}"; \
	else echo "cabin: this host's KVM cannot boot Linux natively; booting in the nested sandbox (guest 'reboot' ends it)" >&2; \
	exec $(RES)/sandbox/run --interactive --rw "$$PWD" -- "$${cmd[@]}"; fi

test: lint unit e2e
	$(MAKE) --no-print-directory bench-containers QUICK=1

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Unit tests, KVM smoke tests with tiny guests, and the bad-input tests: they run on
# any /dev/kvm, this project's software-hypervisor CI machines included. The
# workspace includes tests/fuzz, whose replay test runs every fuzz corpus and crash
# input through its target (no AFL needed).
unit:
	$(CARGO) test --workspace

# Coverage-guided fuzzing (tests/fuzz): builds the targets with cargo-afl (installed
# into $(CABIN_CACHE) on first use) and runs each for FUZZ_TIME seconds at nice 19;
# prints executions, execs/s, corpus size and crashes per target. Crashing inputs
# land in tests/fuzz/crashes/<target>/, replayed by `make unit` once committed.
FUZZ_TIME ?= 60
fuzz:
	FUZZ_TIME="$(FUZZ_TIME)" FUZZ_TARGETS="$(FUZZ_TARGETS)" tests/fuzz/run.sh

# End-to-end tests with real guest kernels (tests/{boot,disk,distro,lifecycle,net,firecracker_client,console,acpi,snapshot,vsock}.rs):
# natively where `cabin check` says guests boot here, else in the nested sandbox
# (with the checkout shared at its own path, wherever it is: /tmp is a tmpfs there).
# The nested sandbox (QEMU TCG emulating AMD SVM) occasionally crashes or locks up
# by itself; run reports that as status 125, distinct from any test result, and the
# run is retried in a fresh sandbox, at most five times (each bounded to 15 min).
# The snapshot and vsock tests (the latter restore a guest too) run in a sandbox
# of their own: restoring guests takes the sandbox's kernel down more often than
# booting them (README, "The nested sandbox"), and a crash there then costs a
# retry of those tests only.
# The network tests, whose traffic is what most often brings the sandbox's kernel
# down (its error_entry stack overflow), run in a sandbox of their own as well:
# such a crash then repeats 2 minutes of tests, not 10.
E2E_TESTS := boot disk distro lifecycle firecracker_client console acpi
E2E_NET_SANDBOX := net
E2E_OWN_SANDBOX := snapshot vsock
e2e_bins = $(CARGO) test -p vmm $(foreach t,$(1),--test $(t)) --no-run --message-format=json 2>/dev/null \
	  | jq -r 'select(.reason == "compiler-artifact" and .profile.test == true) | .executable | select(. != null)'
e2e: artifacts
	$(CARGO) build --release
	groups=("$$($(call e2e_bins,$(E2E_TESTS)))" "$$($(call e2e_bins,$(E2E_NET_SANDBOX)))" "$$($(call e2e_bins,$(E2E_OWN_SANDBOX)))"); \
	for bins in "$${groups[@]}"; do \
	  test -n "$$bins" || { echo "cannot find the end-to-end test binaries" >&2; exit 1; }; \
	done; \
	$(ARTIFACT_ENV); \
	if $(CABIN_RELEASE) check >/dev/null; then \
	  tests/run-e2e $${groups[@]}; \
	  exit $$?; \
	fi; \
	echo "e2e: this host cannot boot guests natively; running the end-to-end tests in the nested sandbox" >&2; \
	for bins in "$${groups[@]}"; do \
	  for attempt in 1 2 3 4 5; do \
	    rc=0; CABIN_SANDBOX_TIMEOUT=$${CABIN_SANDBOX_TIMEOUT:-900} $(RES)/sandbox/run --rw "$$PWD" -- "$$PWD/tests/run-e2e" $$bins || rc=$$?; \
	    [ "$$rc" -eq 125 ] || break; \
	    echo "e2e: the sandbox itself failed (status 125: its QEMU TCG machine crashed or hung, not a test); retrying in a fresh sandbox ($$attempt/5)" >&2; \
	  done; \
	  [ "$$rc" -eq 0 ] || exit "$$rc"; \
	done

# Benchmarks (not tests): boot time and memory, Debian's own kernel and initrd to
# the multi-user target and poweroff, then disk, network and lifecycle, each
# against QEMU -M microvm in the same environment; the API server (latency,
# throughput, RSS under 100,000 requests); rate-limiter accuracy; snapshots;
# `cabin exec` against `crun exec` and vsock against TCP in the same guest.
# Results in build/bench/.
bench: build artifacts
	$(RES)/bench/boot.sh
	$(RES)/bench/distro.sh
	$(RES)/bench/io.sh
	$(RES)/bench/api.sh
	$(RES)/bench/ratelimit.sh
	$(RES)/bench/snapshot.sh
	$(RES)/bench/exec.sh

# VMs against containers (resources/bench/containers.py). QUICK=1: one run with
# small sizes, written to build/bench/containers-quick.*, and every cell checked.
bench-containers: build artifacts
	$(RES)/bench/containers.sh $(if $(QUICK),--quick --check)

# 100 guests, at most 30 at once, cabin alternating with QEMU -M microvm, each with
# disk and network traffic; every failure is reported with the guest's last output
# (build/soak/soak.md). SOAK_ARGS goes to resources/soak/soak.py (e.g.
# SOAK_ARGS="--guests 20 --parallel 5 --vmm cabin").
soak: build artifacts
	$(RES)/soak/soak.sh $(SOAK_ARGS)

clean:
	$(CARGO) clean
