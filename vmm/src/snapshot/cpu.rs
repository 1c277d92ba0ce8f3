//! What KVM holds for a VM and each of its vCPUs, read out for a snapshot and
//! written back on restore.

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msr_entry, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
    CpuId, Msrs, KVM_CLOCK_TSC_STABLE, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::{VcpuFd, VmFd};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A KVM call that failed while saving or restoring, by name.
#[derive(Debug, Error)]
#[error("KVM {0} failed")]
pub struct KvmCallError(pub &'static str, #[source] pub kvm_ioctls::Error);

fn call(name: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmCallError {
    move |e| KvmCallError(name, e)
}

/// Everything KVM keeps for one vCPU, in the order it is restored.
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    /// The CPUID the guest saw (restored as is: the guest has already looked).
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// Running, halted, waiting for SIPI...
    pub mp_state: kvm_mp_state,
    /// General-purpose registers, RIP, RFLAGS.
    pub regs: kvm_regs,
    /// Segments, control registers, EFER, the APIC base.
    pub sregs: kvm_sregs,
    /// x87, SSE and AVX state (XSAVE area, which holds the FPU's too).
    pub xsave: kvm_xsave,
    /// XCR0.
    pub xcrs: kvm_xcrs,
    /// DR0-DR7.
    pub debug_regs: kvm_debugregs,
    /// The local APIC's registers (its timer included).
    pub lapic: kvm_lapic_state,
    /// Every MSR KVM lists that it could read: the TSC, kvmclock, SYSCALL, PAT...
    pub msrs: Vec<kvm_msr_entry>,
    /// Pending exceptions, interrupts and NMIs, the interrupt shadow.
    pub events: kvm_vcpu_events,
    /// The TSC frequency the guest calibrated against, if KVM reported it.
    pub tsc_khz: Option<u32>,
}

/// Reads at most this many MSRs in one KVM_GET_MSRS.
const MSR_BATCH: usize = 256;

impl VcpuState {
    /// Reads the state of a vCPU that is outside KVM_RUN. `msr_indices` is KVM's
    /// list (KVM_GET_MSR_INDEX_LIST); the MSRs KVM lists but cannot read for this
    /// vCPU are skipped. `cpuid` is what cabin gave the vCPU (KVM_GET_CPUID2 is not
    /// asked: some KVM implementations answer with the host's CPUID instead).
    pub fn save(
        fd: &VcpuFd,
        msr_indices: &[u32],
        cpuid: &[kvm_cpuid_entry2],
    ) -> Result<Self, KvmCallError> {
        // KVM_GET_MP_STATE first: it settles pending APIC events into the state
        // read by the calls after it.
        let mp_state = fd.get_mp_state().map_err(call("KVM_GET_MP_STATE"))?;
        Ok(VcpuState {
            cpuid: cpuid.to_vec(),
            mp_state,
            regs: fd.get_regs().map_err(call("KVM_GET_REGS"))?,
            sregs: fd.get_sregs().map_err(call("KVM_GET_SREGS"))?,
            xsave: fd.get_xsave().map_err(call("KVM_GET_XSAVE"))?,
            xcrs: fd.get_xcrs().map_err(call("KVM_GET_XCRS"))?,
            debug_regs: fd.get_debug_regs().map_err(call("KVM_GET_DEBUGREGS"))?,
            lapic: fd.get_lapic().map_err(call("KVM_GET_LAPIC"))?,
            msrs: read_msrs(fd, msr_indices)?,
            events: fd.get_vcpu_events().map_err(call("KVM_GET_VCPU_EVENTS"))?,
            tsc_khz: fd.get_tsc_khz().ok(),
        })
    }

    /// Writes this state into a new vCPU that has not run yet.
    pub fn restore(&self, fd: &VcpuFd) -> Result<(), RestoreCpuError> {
        let cpuid = CpuId::from_entries(&self.cpuid).map_err(|_| RestoreCpuError::TooManyCpuid)?;
        fd.set_cpuid2(&cpuid).map_err(call("KVM_SET_CPUID2"))?;
        if let Some(khz) = self.tsc_khz {
            // The guest calibrated its clocks against this frequency; KVM scales the
            // TSC where the hardware can. Where it cannot, the guest's clock runs
            // at the host's rate instead, which only matters across different hosts.
            if fd.get_tsc_khz().is_ok_and(|here| here != khz) {
                if let Err(e) = fd.set_tsc_khz(khz) {
                    log::warn!("cannot set the snapshot's TSC frequency {khz} kHz: {e}");
                }
            }
        }
        fd.set_mp_state(self.mp_state)
            .map_err(call("KVM_SET_MP_STATE"))?;
        fd.set_regs(&self.regs).map_err(call("KVM_SET_REGS"))?;
        fd.set_sregs(&self.sregs).map_err(call("KVM_SET_SREGS"))?;
        // SAFETY: `self.xsave` is a whole kvm_xsave as KVM_GET_XSAVE returned it
        // (legacy 4 KiB layout, no trailing area), so KVM reads only that struct.
        unsafe { fd.set_xsave(&self.xsave) }.map_err(call("KVM_SET_XSAVE"))?;
        fd.set_xcrs(&self.xcrs).map_err(call("KVM_SET_XCRS"))?;
        fd.set_debug_regs(&self.debug_regs)
            .map_err(call("KVM_SET_DEBUGREGS"))?;
        fd.set_lapic(&self.lapic).map_err(call("KVM_SET_LAPIC"))?;
        let msrs = Msrs::from_entries(&self.msrs).map_err(|_| RestoreCpuError::TooManyMsrs)?;
        let set = fd.set_msrs(&msrs).map_err(call("KVM_SET_MSRS"))?;
        if set != self.msrs.len() {
            let index = self.msrs.get(set).map_or(0, |e| e.index);
            return Err(RestoreCpuError::Msr(index));
        }
        fd.set_vcpu_events(&self.events)
            .map_err(call("KVM_SET_VCPU_EVENTS"))?;
        Ok(())
    }
}

/// Reads every MSR of `indices` KVM can read: KVM_GET_MSRS stops at the first it
/// cannot, which is left out and the rest read on.
fn read_msrs(fd: &VcpuFd, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, KvmCallError> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let batch = &rest[..rest.len().min(MSR_BATCH)];
        let entries: Vec<kvm_msr_entry> = batch
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries)
            .map_err(|_| KvmCallError("KVM_GET_MSRS", kvm_ioctls::Error::new(libc::E2BIG)))?;
        let read = fd.get_msrs(&mut msrs).map_err(call("KVM_GET_MSRS"))?;
        out.extend_from_slice(&msrs.as_slice()[..read.min(batch.len())]);
        // Skip the one KVM refused, if it stopped early.
        let done = if read < batch.len() { read + 1 } else { read };
        rest = &rest[done..];
    }
    Ok(out)
}

/// Why a vCPU's state could not be written back.
#[derive(Debug, Error)]
pub enum RestoreCpuError {
    /// A KVM call failed.
    #[error(transparent)]
    Kvm(#[from] KvmCallError),
    /// The snapshot lists more CPUID entries than KVM takes.
    #[error("the snapshot's CPUID has too many entries")]
    TooManyCpuid,
    /// The snapshot lists more MSRs than KVM takes.
    #[error("the snapshot has too many MSRs")]
    TooManyMsrs,
    /// KVM refused one MSR.
    #[error("KVM refused the snapshot's MSR {0:#x}: this host's KVM does not have it")]
    Msr(u32),
}

/// What KVM keeps for the whole VM: the interrupt controllers, the PIT, kvmclock.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmState {
    /// The two 8259 PICs and the IOAPIC.
    pub irqchips: Vec<kvm_irqchip>,
    /// The 8254 timer.
    pub pit: kvm_pit_state2,
    /// kvmclock's base.
    pub clock: kvm_clock_data,
}

const IRQCHIPS: [u32; 3] = [
    KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQCHIP_IOAPIC,
];

impl VmState {
    /// Reads the VM's state; its vCPUs must be outside KVM_RUN.
    pub fn save(vm: &VmFd) -> Result<Self, KvmCallError> {
        let irqchips = IRQCHIPS
            .iter()
            .map(|&chip_id| {
                let mut chip = kvm_irqchip {
                    chip_id,
                    ..Default::default()
                };
                vm.get_irqchip(&mut chip).map(|()| chip)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(call("KVM_GET_IRQCHIP"))?;
        Ok(VmState {
            irqchips,
            pit: vm.get_pit2().map_err(call("KVM_GET_PIT2"))?,
            clock: vm.get_clock().map_err(call("KVM_GET_CLOCK"))?,
        })
    }

    /// Writes the state back into a new VM with its irqchip and PIT created.
    pub fn restore(&self, vm: &VmFd) -> Result<(), KvmCallError> {
        for chip in &self.irqchips {
            if !IRQCHIPS.contains(&chip.chip_id) {
                return Err(KvmCallError(
                    "KVM_SET_IRQCHIP",
                    kvm_ioctls::Error::new(libc::EINVAL),
                ));
            }
            vm.set_irqchip(chip).map_err(call("KVM_SET_IRQCHIP"))?;
        }
        vm.set_pit2(&self.pit).map_err(call("KVM_SET_PIT2"))?;
        // KVM_SET_CLOCK takes only the clock and, where supported, the realtime
        // flag; TSC_STABLE is a read-only report.
        let clock = kvm_clock_data {
            flags: self.clock.flags & !KVM_CLOCK_TSC_STABLE,
            ..self.clock
        };
        vm.set_clock(&clock).map_err(call("KVM_SET_CLOCK"))?;
        Ok(())
    }
}

/// CPUID feature registers a guest relies on.
const FEATURE_REGISTERS: [(u32, u32, Register); 8] = [
    (1, 0, Register::Ecx),
    (1, 0, Register::Edx),
    (7, 0, Register::Ebx),
    (7, 0, Register::Ecx),
    (7, 0, Register::Edx),
    (0xd, 1, Register::Eax),
    (0x8000_0001, 0, Register::Ecx),
    (0x8000_0001, 0, Register::Edx),
];

#[derive(Clone, Copy, Debug)]
enum Register {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

impl Register {
    fn of(self, entry: &kvm_cpuid_entry2) -> u32 {
        match self {
            Register::Eax => entry.eax,
            Register::Ebx => entry.ebx,
            Register::Ecx => entry.ecx,
            Register::Edx => entry.edx,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Register::Eax => "EAX",
            Register::Ebx => "EBX",
            Register::Ecx => "ECX",
            Register::Edx => "EDX",
        }
    }
}

fn leaf(entries: &[kvm_cpuid_entry2], function: u32, index: u32) -> Option<&kvm_cpuid_entry2> {
    entries
        .iter()
        .find(|e| e.function == function && e.index == index)
}

/// The first CPU feature the snapshot's guest saw that this host would not give it
/// (`here`: what cabin gives the same vCPU on a cold boot on this host), as "leaf
/// 0x7 EBX bits 0x20": a guest that uses it would fault.
pub fn missing_cpu_features(
    saved: &[kvm_cpuid_entry2],
    here: &[kvm_cpuid_entry2],
) -> Option<String> {
    FEATURE_REGISTERS
        .iter()
        .find_map(|&(function, index, register)| {
            let seen = leaf(saved, function, index).map_or(0, |e| register.of(e));
            let offered = leaf(here, function, index).map_or(0, |e| register.of(e));
            let missing = seen & !offered;
            (missing != 0).then(|| {
                format!(
                    "CPUID leaf {function:#x}.{index} {} bits {missing:#x}",
                    register.name()
                )
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, ebx: u32, ecx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx,
            ecx,
            ..Default::default()
        }
    }

    #[test]
    fn missing_cpu_features_names_the_leaf_and_bits() {
        let host = [entry(1, 0, 0, 0b0110), entry(7, 0, 0b1000, 0)];
        assert_eq!(missing_cpu_features(&[entry(1, 0, 0, 0b0100)], &host), None);
        assert_eq!(
            missing_cpu_features(&[entry(7, 0, 0b1001, 0)], &host).as_deref(),
            Some("CPUID leaf 0x7.0 EBX bits 0x1")
        );
        // A leaf the host lacks entirely lacks every bit.
        assert!(missing_cpu_features(&[entry(0x8000_0001, 0, 0, 1)], &host).is_some());
    }
}
