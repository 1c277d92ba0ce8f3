//! Per-vCPU CPUID: patches what `KVM_GET_SUPPORTED_CPUID` returned with the vCPU's
//! APIC id and a topology of one package with one thread per core and `num_vcpus`
//! cores, and hides power-management features the VMM does not provide.
//!
//! Only leaves present in the input are changed; none is added or removed.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

use crate::layout::MAX_SUPPORTED_CPUS;

/// Leaf 0x1: version and feature information.
pub const LEAF_FEATURES: u32 = 0x1;
/// Leaf 0x4: deterministic cache parameters (Intel).
pub const LEAF_CACHE_PARAMS: u32 = 0x4;
/// Leaf 0x6: thermal and power management.
pub const LEAF_THERMAL_POWER: u32 = 0x6;
/// Leaf 0xb: extended topology enumeration.
pub const LEAF_EXT_TOPOLOGY: u32 = 0xb;
/// Leaf 0x1f: V2 extended topology enumeration.
pub const LEAF_EXT_TOPOLOGY_V2: u32 = 0x1f;
/// Leaf 0x8000_0008: address sizes and core count (AMD).
pub const LEAF_AMD_SIZES: u32 = 0x8000_0008;
/// Leaf 0x8000_001d: cache topology (AMD).
pub const LEAF_AMD_CACHE_TOPOLOGY: u32 = 0x8000_001d;
/// Leaf 0x8000_001e: extended APIC id, core and node ids (AMD).
pub const LEAF_AMD_EXT_APIC_ID: u32 = 0x8000_001e;

/// A bit field of a CPUID register: `width` bits starting at bit `shift`.
#[derive(Clone, Copy, Debug)]
struct Field {
    shift: u32,
    width: u32,
}

impl Field {
    const fn new(shift: u32, width: u32) -> Self {
        Field { shift, width }
    }

    fn mask(self) -> u32 {
        (u32::MAX >> (u32::BITS - self.width)) << self.shift
    }

    /// Returns `reg` with this field set to `value`, saturated to the field's maximum.
    fn set(self, reg: u32, value: u32) -> u32 {
        let max = u32::MAX >> (u32::BITS - self.width);
        (reg & !self.mask()) | (value.min(max) << self.shift)
    }

    fn get(self, reg: u32) -> u32 {
        (reg & self.mask()) >> self.shift
    }
}

/// Leaf 0x1 EBX: CLFLUSH line size in 8-byte units.
const LEAF1_EBX_CLFLUSH: Field = Field::new(8, 8);
/// Leaf 0x1 EBX: maximum number of addressable logical processor ids in the package.
const LEAF1_EBX_CPU_COUNT: Field = Field::new(16, 8);
/// Leaf 0x1 EBX: initial APIC id.
const LEAF1_EBX_APIC_ID: Field = Field::new(24, 8);
/// CLFLUSH line size reported: 8 units of 8 bytes, i.e. 64-byte cache lines.
const CLFLUSH_LINE_QWORDS: u32 = 8;
/// Leaf 0x1 ECX bit 31: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 0x1 EDX bit 28: the EBX[23:16] processor count is valid (HTT).
const LEAF1_EDX_HTT: u32 = 1 << 28;

/// Leaf 0x4 / 0x8000_001d EAX: cache type, 0 when there are no more caches.
const CACHE_EAX_TYPE: Field = Field::new(0, 5);
/// Leaf 0x4 / 0x8000_001d EAX: cache level.
const CACHE_EAX_LEVEL: Field = Field::new(5, 3);
/// Leaf 0x4 / 0x8000_001d EAX: logical processors sharing the cache, minus one.
const CACHE_EAX_SHARING: Field = Field::new(14, 12);
/// Leaf 0x4 EAX: addressable core ids in the package, minus one.
const CACHE_EAX_CORES: Field = Field::new(26, 6);
/// First cache level shared by all cores of the package.
const SHARED_CACHE_LEVEL: u32 = 3;

/// Leaf 0x6 EAX bits the VMM cannot provide: Turbo Boost (1), HWP and its
/// notification, activity window, energy preference and package request (7-11),
/// Turbo Boost Max 3.0 (14).
const LEAF6_EAX_UNSUPPORTED: u32 = (1 << 1) | (0x1f << 7) | (1 << 14);
/// Leaf 0x6 ECX bit 3: performance-energy bias preference (IA32_ENERGY_PERF_BIAS).
const LEAF6_ECX_UNSUPPORTED: u32 = 1 << 3;

/// Leaf 0xb / 0x1f EAX: shift of the x2APIC id to reach the next level's id.
const TOPOLOGY_EAX_SHIFT: Field = Field::new(0, 5);
/// Leaf 0xb / 0x1f EBX: logical processors at this level.
const TOPOLOGY_EBX_COUNT: Field = Field::new(0, 16);
/// Leaf 0xb / 0x1f ECX: the subleaf number.
const TOPOLOGY_ECX_LEVEL: Field = Field::new(0, 8);
/// Leaf 0xb / 0x1f ECX: the level type.
const TOPOLOGY_ECX_TYPE: Field = Field::new(8, 8);
/// Level type: invalid (past the last level).
const LEVEL_TYPE_INVALID: u32 = 0;
/// Level type: SMT (threads of a core).
const LEVEL_TYPE_SMT: u32 = 1;
/// Level type: core (cores of a package).
const LEVEL_TYPE_CORE: u32 = 2;
/// Subleaf describing the SMT level.
const SUBLEAF_SMT: u32 = 0;
/// Subleaf describing the core level.
const SUBLEAF_CORE: u32 = 1;

/// Leaf 0x8000_0008 ECX: number of cores in the package, minus one (NC).
const AMD_ECX_CORE_COUNT: Field = Field::new(0, 8);
/// Leaf 0x8000_0008 ECX: APIC id bits that identify the core (ApicIdCoreIdSize).
const AMD_ECX_APIC_ID_CORE_BITS: Field = Field::new(12, 4);
/// Leaf 0x8000_001e EBX: core id.
const AMD_EBX_CORE_ID: Field = Field::new(0, 8);
/// Leaf 0x8000_001e EBX: threads per core, minus one.
const AMD_EBX_THREADS_PER_CORE: Field = Field::new(8, 8);

/// Errors in the requested topology.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A VM needs at least one vCPU.
    #[error("Number of vCPUs is 0; at least one is needed")]
    NoVcpus,
    /// More vCPUs than xAPIC ids allow.
    #[error("{num_vcpus} vCPUs exceed the maximum of {max}")]
    TooManyVcpus {
        /// Number of vCPUs requested.
        num_vcpus: u8,
        /// Largest supported number.
        max: u8,
    },
    /// The vCPU index is not below the vCPU count.
    #[error("vCPU id {vcpu_id} is out of range for {num_vcpus} vCPUs")]
    VcpuIdOutOfRange {
        /// Index of the vCPU.
        vcpu_id: u8,
        /// Number of vCPUs.
        num_vcpus: u8,
    },
}

/// The topology one vCPU reports: one package of `num_vcpus` threads, one or two
/// (SMT) threads per core.
#[derive(Clone, Copy, Debug)]
struct Topology {
    /// Initial (x2)APIC id of this vCPU, equal to its index.
    apic_id: u32,
    /// Number of vCPUs, i.e. threads in the package.
    num_vcpus: u32,
    /// Bits of the APIC id that number the thread and core: ceil(log2(num_vcpus)).
    core_bits: u32,
    /// Threads per core: 2 with SMT (and an even vCPU count), else 1.
    threads_per_core: u32,
}

impl Topology {
    fn new(vcpu_id: u8, num_vcpus: u8, smt: bool) -> Result<Self, Error> {
        if num_vcpus == 0 {
            return Err(Error::NoVcpus);
        }
        if num_vcpus > MAX_SUPPORTED_CPUS {
            return Err(Error::TooManyVcpus {
                num_vcpus,
                max: MAX_SUPPORTED_CPUS,
            });
        }
        if vcpu_id >= num_vcpus {
            return Err(Error::VcpuIdOutOfRange { vcpu_id, num_vcpus });
        }
        let num_vcpus = u32::from(num_vcpus);
        let threads_per_core = if smt && num_vcpus & 1 == 0 { 2 } else { 1 };
        Ok(Topology {
            apic_id: u32::from(vcpu_id),
            num_vcpus,
            core_bits: num_vcpus.next_power_of_two().trailing_zeros(),
            threads_per_core,
        })
    }

    /// Cores in the package.
    fn cores(&self) -> u32 {
        self.num_vcpus / self.threads_per_core
    }
}

/// Leaf 0x1: APIC id, logical processor count, CLFLUSH size, HTT and hypervisor bits.
fn patch_features(entry: &mut kvm_cpuid_entry2, topo: &Topology) {
    entry.ebx = LEAF1_EBX_APIC_ID.set(entry.ebx, topo.apic_id);
    entry.ebx = LEAF1_EBX_CPU_COUNT.set(entry.ebx, topo.num_vcpus);
    entry.ebx = LEAF1_EBX_CLFLUSH.set(entry.ebx, CLFLUSH_LINE_QWORDS);
    entry.ecx |= LEAF1_ECX_HYPERVISOR;
    if topo.num_vcpus > 1 {
        entry.edx |= LEAF1_EDX_HTT;
    } else {
        entry.edx &= !LEAF1_EDX_HTT;
    }
}

/// Leaf 0x1 ECX: the local APIC timer has a TSC-deadline mode.
pub const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;

/// Offers the local APIC timer's TSC-deadline mode (leaf 0x1 ECX bit 24), which
/// `KVM_GET_SUPPORTED_CPUID` leaves out even where KVM emulates it (with
/// `KVM_CAP_TSC_DEADLINE_TIMER` and the in-kernel local APIC, which cabin always
/// creates). Without it Linux re-arms its timer by writing the APIC's initial-count
/// register, an MMIO access KVM decodes and emulates every time, not one WRMSR.
pub fn enable_tsc_deadline(cpuid: &mut CpuId) {
    for entry in cpuid.as_mut_slice() {
        if entry.function == LEAF_FEATURES {
            entry.ecx |= LEAF1_ECX_TSC_DEADLINE;
        }
    }
}

/// Returns `eax` of a cache subleaf with its sharing count set: private to a core
/// below [`SHARED_CACHE_LEVEL`], shared by all vCPUs from there on.
fn cache_sharing(eax: u32, topo: &Topology) -> u32 {
    let sharing = if CACHE_EAX_LEVEL.get(eax) >= SHARED_CACHE_LEVEL {
        topo.num_vcpus - 1
    } else {
        topo.threads_per_core - 1
    };
    CACHE_EAX_SHARING.set(eax, sharing)
}

/// Leaf 0x4: cores per package and threads sharing each cache.
fn patch_cache_params(entry: &mut kvm_cpuid_entry2, topo: &Topology) {
    if CACHE_EAX_TYPE.get(entry.eax) == 0 {
        return;
    }
    entry.eax = cache_sharing(entry.eax, topo);
    entry.eax = CACHE_EAX_CORES.set(entry.eax, topo.cores() - 1);
}

/// Leaf 0x8000_001d: threads sharing each cache.
fn patch_amd_cache_topology(entry: &mut kvm_cpuid_entry2, topo: &Topology) {
    if CACHE_EAX_TYPE.get(entry.eax) != 0 {
        entry.eax = cache_sharing(entry.eax, topo);
    }
}

/// Leaf 0x6: hide turbo, HWP and energy-bias features.
fn patch_thermal_power(entry: &mut kvm_cpuid_entry2) {
    entry.eax &= !LEAF6_EAX_UNSUPPORTED;
    entry.ecx &= !LEAF6_ECX_UNSUPPORTED;
}

/// Leaves 0xb and 0x1f: SMT level of one or two threads, core level of `num_vcpus`.
fn patch_ext_topology(entry: &mut kvm_cpuid_entry2, topo: &Topology) {
    let smt_bits = topo.threads_per_core.trailing_zeros();
    let (shift, count, level_type) = match entry.index {
        SUBLEAF_SMT => (smt_bits, topo.threads_per_core, LEVEL_TYPE_SMT),
        SUBLEAF_CORE => (topo.core_bits, topo.num_vcpus, LEVEL_TYPE_CORE),
        _ => (0, 0, LEVEL_TYPE_INVALID),
    };
    entry.eax = TOPOLOGY_EAX_SHIFT.set(0, shift);
    entry.ebx = TOPOLOGY_EBX_COUNT.set(0, count);
    entry.ecx = TOPOLOGY_ECX_LEVEL.set(0, entry.index);
    entry.ecx = TOPOLOGY_ECX_TYPE.set(entry.ecx, level_type);
    entry.edx = topo.apic_id;
}

/// Leaf 0x8000_0008: core count and the APIC id bits that number the core.
fn patch_amd_sizes(entry: &mut kvm_cpuid_entry2, topo: &Topology) {
    entry.ecx = AMD_ECX_CORE_COUNT.set(entry.ecx, topo.num_vcpus - 1);
    entry.ecx = AMD_ECX_APIC_ID_CORE_BITS.set(entry.ecx, topo.core_bits);
}

/// Leaf 0x8000_001e: extended APIC id, core id and threads per core.
fn patch_amd_ext_apic_id(entry: &mut kvm_cpuid_entry2, topo: &Topology) {
    entry.eax = topo.apic_id;
    entry.ebx = AMD_EBX_CORE_ID.set(entry.ebx, topo.apic_id / topo.threads_per_core);
    entry.ebx = AMD_EBX_THREADS_PER_CORE.set(entry.ebx, topo.threads_per_core - 1);
}

/// Patches `cpuid`, as returned by `KVM_GET_SUPPORTED_CPUID`, for vCPU `vcpu_id` of
/// `num_vcpus`: APIC ids equal vCPU indices, all vCPUs are in one package, one
/// thread per core (two with `smt` and an even count), the hypervisor bit is set and
/// turbo/HWP features are hidden.
pub fn setup_cpuid(cpuid: &mut CpuId, vcpu_id: u8, num_vcpus: u8, smt: bool) -> Result<(), Error> {
    let topo = Topology::new(vcpu_id, num_vcpus, smt)?;
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            LEAF_FEATURES => patch_features(entry, &topo),
            LEAF_CACHE_PARAMS => patch_cache_params(entry, &topo),
            LEAF_THERMAL_POWER => patch_thermal_power(entry),
            LEAF_EXT_TOPOLOGY | LEAF_EXT_TOPOLOGY_V2 => patch_ext_topology(entry, &topo),
            LEAF_AMD_SIZES => patch_amd_sizes(entry, &topo),
            LEAF_AMD_CACHE_TOPOLOGY => patch_amd_cache_topology(entry, &topo),
            LEAF_AMD_EXT_APIC_ID => patch_amd_ext_apic_id(entry, &topo),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX;

    const TSC_DEADLINE: u32 = 1 << 24;
    const ARAT: u32 = 1 << 2;

    fn leaf(function: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        }
    }

    fn subleaf(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            index,
            flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
            ..leaf(function, eax, ebx, ecx, 0)
        }
    }

    /// Cache subleaf EAX as a host reports it: type, level, sharing, cores.
    fn cache_eax(cache_type: u32, level: u32, sharing: u32, cores: u32) -> u32 {
        cache_type | (level << 5) | (sharing << 14) | (cores << 26)
    }

    /// A CPUID list shaped like an 8-core, 16-thread host's.
    fn host_entries() -> Vec<kvm_cpuid_entry2> {
        vec![
            leaf(0x0, 0x1f, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
            leaf(
                LEAF_FEATURES,
                0x000a_0671,
                0x0a10_0801,
                TSC_DEADLINE | 1,
                1 << 28,
            ),
            subleaf(LEAF_CACHE_PARAMS, 0, cache_eax(1, 1, 1, 7), 0, 63),
            subleaf(LEAF_CACHE_PARAMS, 1, cache_eax(2, 1, 1, 7), 0, 63),
            subleaf(LEAF_CACHE_PARAMS, 2, cache_eax(3, 2, 1, 7), 0, 1023),
            subleaf(LEAF_CACHE_PARAMS, 3, cache_eax(3, 3, 15, 7), 0, 16383),
            subleaf(LEAF_CACHE_PARAMS, 4, 0, 0, 0),
            leaf(LEAF_THERMAL_POWER, ARAT | LEAF6_EAX_UNSUPPORTED, 0, 0x9, 0),
            subleaf(LEAF_EXT_TOPOLOGY, 0, 1, 2, 0x100),
            subleaf(LEAF_EXT_TOPOLOGY, 1, 4, 16, 0x201),
            subleaf(LEAF_EXT_TOPOLOGY, 2, 0, 0, 0x2),
            subleaf(LEAF_EXT_TOPOLOGY_V2, 0, 1, 2, 0x100),
            subleaf(LEAF_EXT_TOPOLOGY_V2, 1, 4, 16, 0x201),
            subleaf(LEAF_EXT_TOPOLOGY_V2, 2, 0, 0, 0x2),
            leaf(0x8000_0000, 0x8000_001e, 0, 0, 0),
            leaf(LEAF_AMD_SIZES, 0x3030, 0, 0x700f, 0),
            subleaf(LEAF_AMD_CACHE_TOPOLOGY, 0, cache_eax(1, 1, 1, 0), 0, 0),
            subleaf(LEAF_AMD_CACHE_TOPOLOGY, 1, cache_eax(3, 3, 15, 0), 0, 0),
            leaf(LEAF_AMD_EXT_APIC_ID, 0, 0, 0, 0),
        ]
    }

    fn patched(vcpu_id: u8, num_vcpus: u8) -> CpuId {
        let mut cpuid = CpuId::from_entries(&host_entries()).unwrap();
        setup_cpuid(&mut cpuid, vcpu_id, num_vcpus, false).unwrap();
        cpuid
    }

    fn find(cpuid: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn setup_cpuid_one_vcpu_leaf1_reports_single_processor() {
        let cpuid = patched(0, 1);

        let entry = find(&cpuid, LEAF_FEATURES, 0);
        assert_eq!(entry.ebx, 0x0001_0801);
        assert_eq!(entry.edx & LEAF1_EDX_HTT, 0);
        assert_eq!(entry.ecx & LEAF1_ECX_HYPERVISOR, LEAF1_ECX_HYPERVISOR);
        assert_eq!(entry.ecx & TSC_DEADLINE, TSC_DEADLINE);
        assert_eq!(entry.eax, 0x000a_0671);
    }

    #[test]
    fn setup_cpuid_four_vcpus_leaf1_reports_apic_id_and_htt() {
        let cpuid = patched(2, 4);

        let entry = find(&cpuid, LEAF_FEATURES, 0);
        assert_eq!(entry.ebx, 0x0204_0801);
        assert_eq!(entry.edx & LEAF1_EDX_HTT, LEAF1_EDX_HTT);
        assert_eq!(entry.ecx & LEAF1_ECX_HYPERVISOR, LEAF1_ECX_HYPERVISOR);
    }

    #[test]
    fn enable_tsc_deadline_sets_leaf_1_ecx_bit_24_only() {
        let mut cpuid = CpuId::from_entries(&host_entries()).unwrap();
        cpuid.as_mut_slice()[1].ecx &= !TSC_DEADLINE;
        let before = cpuid.clone();
        enable_tsc_deadline(&mut cpuid);
        for (old, new) in before.as_slice().iter().zip(cpuid.as_slice()) {
            if old.function == LEAF_FEATURES {
                assert_eq!(new.ecx, old.ecx | TSC_DEADLINE);
                assert_eq!((new.eax, new.ebx, new.edx), (old.eax, old.ebx, old.edx));
            } else {
                assert_eq!(new, old);
            }
        }
    }

    #[test]
    fn setup_cpuid_tsc_deadline_absent_stays_absent() {
        let mut entries = host_entries();
        entries[1].ecx &= !TSC_DEADLINE;
        let mut cpuid = CpuId::from_entries(&entries).unwrap();

        setup_cpuid(&mut cpuid, 0, 2, false).unwrap();

        assert_eq!(find(&cpuid, LEAF_FEATURES, 0).ecx & TSC_DEADLINE, 0);
    }

    #[test]
    fn setup_cpuid_four_vcpus_leaf4_shares_only_l3() {
        let cpuid = patched(1, 4);

        for index in 0..3 {
            let eax = find(&cpuid, LEAF_CACHE_PARAMS, index).eax;
            assert_eq!(CACHE_EAX_SHARING.get(eax), 0, "subleaf {index}");
            assert_eq!(CACHE_EAX_CORES.get(eax), 3, "subleaf {index}");
        }
        let l3 = find(&cpuid, LEAF_CACHE_PARAMS, 3).eax;
        assert_eq!(CACHE_EAX_SHARING.get(l3), 3);
        assert_eq!(CACHE_EAX_CORES.get(l3), 3);
        assert_eq!((CACHE_EAX_TYPE.get(l3), CACHE_EAX_LEVEL.get(l3)), (3, 3));
        assert_eq!(find(&cpuid, LEAF_CACHE_PARAMS, 3).ecx, 16383);
    }

    #[test]
    fn setup_cpuid_one_vcpu_leaf4_reports_one_core() {
        let cpuid = patched(0, 1);

        for index in 0..4 {
            let eax = find(&cpuid, LEAF_CACHE_PARAMS, index).eax;
            assert_eq!(CACHE_EAX_SHARING.get(eax), 0);
            assert_eq!(CACHE_EAX_CORES.get(eax), 0);
        }
    }

    #[test]
    fn setup_cpuid_leaf4_null_subleaf_is_untouched() {
        let cpuid = patched(0, 4);

        assert_eq!(find(&cpuid, LEAF_CACHE_PARAMS, 4).eax, 0);
    }

    #[test]
    fn setup_cpuid_leaf6_hides_turbo_and_hwp() {
        let cpuid = patched(0, 1);

        let entry = find(&cpuid, LEAF_THERMAL_POWER, 0);
        assert_eq!(entry.eax, ARAT);
        assert_eq!(entry.ecx, 0x1);
    }

    #[test]
    fn setup_cpuid_four_vcpus_ext_topology_describes_smt_and_core_levels() {
        let cpuid = patched(3, 4);

        for leaf in [LEAF_EXT_TOPOLOGY, LEAF_EXT_TOPOLOGY_V2] {
            let smt = find(&cpuid, leaf, 0);
            assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 3));
            let core = find(&cpuid, leaf, 1);
            assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (2, 4, 0x201, 3));
            let last = find(&cpuid, leaf, 2);
            assert_eq!((last.eax, last.ebx, last.ecx, last.edx), (0, 0, 0x2, 3));
        }
    }

    #[test]
    fn setup_cpuid_smt_reports_two_threads_per_core() {
        let mut cpuid = CpuId::from_entries(&host_entries()).unwrap();
        setup_cpuid(&mut cpuid, 3, 4, true).unwrap();

        let smt = find(&cpuid, LEAF_EXT_TOPOLOGY, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (1, 2, 0x100, 3));
        let core = find(&cpuid, LEAF_EXT_TOPOLOGY, 1);
        assert_eq!((core.eax, core.ebx, core.ecx), (2, 4, 0x201));
        let amd = find(&cpuid, LEAF_AMD_EXT_APIC_ID, 0);
        assert_eq!(AMD_EBX_THREADS_PER_CORE.get(amd.ebx), 1);
        assert_eq!(AMD_EBX_CORE_ID.get(amd.ebx), 1);
        // An odd count cannot be paired: one thread per core.
        let mut cpuid = CpuId::from_entries(&host_entries()).unwrap();
        setup_cpuid(&mut cpuid, 0, 3, true).unwrap();
        assert_eq!(find(&cpuid, LEAF_EXT_TOPOLOGY, 0).ebx, 1);
    }

    #[test]
    fn setup_cpuid_one_vcpu_ext_topology_has_zero_shift() {
        let cpuid = patched(0, 1);

        let core = find(&cpuid, LEAF_EXT_TOPOLOGY, 1);
        assert_eq!((core.eax, core.ebx, core.edx), (0, 1, 0));
    }

    #[test]
    fn setup_cpuid_three_vcpus_core_shift_rounds_up() {
        let cpuid = patched(0, 3);

        assert_eq!(find(&cpuid, LEAF_EXT_TOPOLOGY, 1).eax, 2);
        let amd = find(&cpuid, LEAF_AMD_SIZES, 0);
        assert_eq!(AMD_ECX_APIC_ID_CORE_BITS.get(amd.ecx), 2);
    }

    #[test]
    fn setup_cpuid_four_vcpus_amd_leaves_report_cores_and_apic_id() {
        let cpuid = patched(2, 4);

        let sizes = find(&cpuid, LEAF_AMD_SIZES, 0);
        assert_eq!(sizes.ecx, 0x2003);
        assert_eq!(sizes.eax, 0x3030);
        let ext = find(&cpuid, LEAF_AMD_EXT_APIC_ID, 0);
        assert_eq!((ext.eax, ext.ebx), (2, 2));
        let l1 = find(&cpuid, LEAF_AMD_CACHE_TOPOLOGY, 0).eax;
        let l3 = find(&cpuid, LEAF_AMD_CACHE_TOPOLOGY, 1).eax;
        assert_eq!(
            (CACHE_EAX_SHARING.get(l1), CACHE_EAX_SHARING.get(l3)),
            (0, 3)
        );
    }

    #[test]
    fn setup_cpuid_one_vcpu_amd_leaves_report_one_core() {
        let cpuid = patched(0, 1);

        assert_eq!(find(&cpuid, LEAF_AMD_SIZES, 0).ecx, 0);
        assert_eq!(find(&cpuid, LEAF_AMD_EXT_APIC_ID, 0).eax, 0);
    }

    #[test]
    fn setup_cpuid_two_vcpus_get_different_apic_ids() {
        let first = patched(0, 2);
        let second = patched(1, 2);

        let apic_id = |cpuid: &CpuId| LEAF1_EBX_APIC_ID.get(find(cpuid, LEAF_FEATURES, 0).ebx);
        assert_ne!(apic_id(&first), apic_id(&second));
        assert_ne!(
            find(&first, LEAF_EXT_TOPOLOGY, 0).edx,
            find(&second, LEAF_EXT_TOPOLOGY, 0).edx
        );
        assert_ne!(
            find(&first, LEAF_AMD_EXT_APIC_ID, 0).eax,
            find(&second, LEAF_AMD_EXT_APIC_ID, 0).eax
        );
    }

    #[test]
    fn setup_cpuid_absent_leaves_stay_absent() {
        let entries: Vec<kvm_cpuid_entry2> = host_entries()
            .into_iter()
            .filter(|e| e.function != LEAF_EXT_TOPOLOGY && e.function < 0x8000_0000)
            .collect();
        let mut cpuid = CpuId::from_entries(&entries).unwrap();

        setup_cpuid(&mut cpuid, 1, 4, false).unwrap();

        assert_eq!(cpuid.as_slice().len(), entries.len());
        assert!(cpuid
            .as_slice()
            .iter()
            .all(|e| e.function != LEAF_EXT_TOPOLOGY && e.function < 0x8000_0000));
    }

    #[test]
    fn setup_cpuid_other_leaves_are_untouched() {
        let cpuid = patched(1, 4);

        assert_eq!(find(&cpuid, 0x0, 0), host_entries()[0]);
        assert_eq!(find(&cpuid, 0x8000_0000, 0), host_entries()[14]);
    }

    #[test]
    fn setup_cpuid_zero_vcpus_fails() {
        let mut cpuid = CpuId::from_entries(&host_entries()).unwrap();

        let err = setup_cpuid(&mut cpuid, 0, 0, false).unwrap_err();

        assert!(matches!(err, Error::NoVcpus));
    }

    #[test]
    fn setup_cpuid_vcpu_id_not_below_count_fails() {
        let mut cpuid = CpuId::from_entries(&host_entries()).unwrap();

        let err = setup_cpuid(&mut cpuid, 4, 4, false).unwrap_err();

        assert!(matches!(
            err,
            Error::VcpuIdOutOfRange {
                vcpu_id: 4,
                num_vcpus: 4
            }
        ));
    }

    #[test]
    fn setup_cpuid_too_many_vcpus_fails() {
        let mut cpuid = CpuId::from_entries(&host_entries()).unwrap();

        let err = setup_cpuid(&mut cpuid, 0, 255, false).unwrap_err();

        assert!(matches!(err, Error::TooManyVcpus { num_vcpus: 255, .. }));
    }

    #[test]
    fn setup_cpuid_max_vcpus_saturates_narrow_fields() {
        let cpuid = patched(253, MAX_SUPPORTED_CPUS);

        let l1 = find(&cpuid, LEAF_CACHE_PARAMS, 0).eax;
        assert_eq!(CACHE_EAX_CORES.get(l1), 63);
        assert_eq!(CACHE_EAX_TYPE.get(l1), 1);
        assert_eq!(find(&cpuid, LEAF_EXT_TOPOLOGY, 1).eax, 8);
        assert_eq!(
            LEAF1_EBX_APIC_ID.get(find(&cpuid, LEAF_FEATURES, 0).ebx),
            253
        );
    }

    #[test]
    fn field_set_saturates_and_keeps_other_bits() {
        let field = Field::new(4, 4);

        assert_eq!(field.set(0xffff_ffff, 3), 0xffff_ff3f);
        assert_eq!(field.set(0, 100), 0xf0);
        assert_eq!(Field::new(0, 32).set(0, 7), 7);
    }
}
