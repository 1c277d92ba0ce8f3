//! Model-specific registers every vCPU starts with.

use kvm_bindings::kvm_msr_entry;

/// IA32_TIME_STAMP_COUNTER.
pub const MSR_IA32_TSC: u32 = 0x10;
/// IA32_SYSENTER_CS: code segment for SYSENTER.
pub const MSR_IA32_SYSENTER_CS: u32 = 0x174;
/// IA32_SYSENTER_ESP: stack pointer for SYSENTER.
pub const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
/// IA32_SYSENTER_EIP: entry point for SYSENTER.
pub const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
/// IA32_MISC_ENABLE: miscellaneous processor features.
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
/// IA32_STAR: segment selectors for SYSCALL/SYSRET.
pub const MSR_STAR: u32 = 0xc000_0081;
/// IA32_LSTAR: 64-bit SYSCALL entry point.
pub const MSR_LSTAR: u32 = 0xc000_0082;
/// IA32_CSTAR: compatibility-mode SYSCALL entry point.
pub const MSR_CSTAR: u32 = 0xc000_0083;
/// IA32_FMASK: RFLAGS mask applied on SYSCALL.
pub const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
/// IA32_KERNEL_GS_BASE: the GS base SWAPGS exchanges with.
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// IA32_MISC_ENABLE bit 0: fast-string operations (REP MOVS/STOS) enabled.
pub const MSR_IA32_MISC_ENABLE_FAST_STRING: u64 = 1 << 0;

/// Returns an MSR entry for `index` holding `data`.
fn msr_entry(index: u32, data: u64) -> kvm_msr_entry {
    kvm_msr_entry {
        index,
        data,
        ..Default::default()
    }
}

/// The MSR values every vCPU is set to before it first runs: the SYSENTER and
/// SYSCALL MSRs cleared (the kernel programs them), the TSC at 0 and fast strings on.
pub fn boot_msr_entries() -> Vec<kvm_msr_entry> {
    vec![
        msr_entry(MSR_IA32_SYSENTER_CS, 0),
        msr_entry(MSR_IA32_SYSENTER_ESP, 0),
        msr_entry(MSR_IA32_SYSENTER_EIP, 0),
        msr_entry(MSR_STAR, 0),
        msr_entry(MSR_CSTAR, 0),
        msr_entry(MSR_KERNEL_GS_BASE, 0),
        msr_entry(MSR_SYSCALL_MASK, 0),
        msr_entry(MSR_LSTAR, 0),
        msr_entry(MSR_IA32_TSC, 0),
        msr_entry(MSR_IA32_MISC_ENABLE, MSR_IA32_MISC_ENABLE_FAST_STRING),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_of(entries: &[kvm_msr_entry], index: u32) -> Option<u64> {
        entries.iter().find(|e| e.index == index).map(|e| e.data)
    }

    #[test]
    fn boot_msr_entries_list_has_each_msr_once() {
        let entries = boot_msr_entries();

        assert_eq!(entries.len(), 10);
        let mut indices: Vec<u32> = entries.iter().map(|e| e.index).collect();
        indices.sort_unstable();
        indices.dedup();
        assert_eq!(indices.len(), entries.len());
    }

    #[test]
    fn boot_msr_entries_syscall_msrs_are_zero() {
        let entries = boot_msr_entries();

        for index in [0x174, 0x175, 0x176, 0xc000_0081, 0xc000_0082, 0xc000_0083] {
            assert_eq!(data_of(&entries, index), Some(0), "MSR {index:#x}");
        }
        assert_eq!(data_of(&entries, 0xc000_0084), Some(0));
        assert_eq!(data_of(&entries, 0xc000_0102), Some(0));
        assert_eq!(data_of(&entries, 0x10), Some(0));
    }

    #[test]
    fn boot_msr_entries_misc_enable_has_fast_strings() {
        let entries = boot_msr_entries();

        assert_eq!(data_of(&entries, 0x1a0), Some(1));
        assert!(entries.iter().all(|e| e.reserved == 0));
    }
}
