//! Intel MultiProcessor Specification 1.4 table, through which Linux finds the vCPUs,
//! the IOAPIC and the routing of ISA interrupts when there are no ACPI tables.
//!
//! The table sits at [`MPTABLE_START`], in the BIOS area that Linux scans: first the
//! 16-byte floating pointer, then the configuration table it points to (header,
//! processor, bus, IOAPIC, I/O interrupt and local interrupt entries).

use std::mem::size_of;

use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError};

use crate::layout::{
    APIC_START, IOAPIC_NUM_PINS, IOAPIC_START, MAX_SUPPORTED_CPUS, MPTABLE_END, MPTABLE_START,
};

/// Signature of the floating pointer structure.
const MPF_SIGNATURE: [u8; 4] = *b"_MP_";
/// Signature of the configuration table header.
const MPC_SIGNATURE: [u8; 4] = *b"PCMP";
/// Specification revision 1.4.
const MP_SPEC_REV: u8 = 4;
/// OEM id of the configuration table.
const MPC_OEM: [u8; 8] = *b"CABIN   ";
/// Product id of the configuration table.
const MPC_PRODUCT_ID: [u8; 12] = *b"CABIN VMM   ";

/// Entry type of a processor entry.
const MP_PROCESSOR: u8 = 0;
/// Entry type of a bus entry.
const MP_BUS: u8 = 1;
/// Entry type of an IOAPIC entry.
const MP_IOAPIC: u8 = 2;
/// Entry type of an I/O interrupt assignment entry.
const MP_INTSRC: u8 = 3;
/// Entry type of a local interrupt assignment entry.
const MP_LINTSRC: u8 = 4;

/// Processor flag: the processor is usable.
const CPU_ENABLED: u8 = 1 << 0;
/// Processor flag: the processor is the bootstrap processor.
const CPU_BOOTPROCESSOR: u8 = 1 << 1;
/// Local APIC version reported for each processor (integrated APIC, as KVM's).
const APIC_VERSION: u8 = 0x14;
/// CPU signature of the processor entries: family 6, model 0, stepping 0.
const CPU_SIGNATURE: u32 = 0x600;
/// CPUID feature flag: x87 FPU on chip.
const CPU_FEATURE_FPU: u32 = 1 << 0;
/// CPUID feature flag: local APIC on chip.
const CPU_FEATURE_APIC: u32 = 1 << 9;

/// Id of the single (ISA) bus.
const ISA_BUS_ID: u8 = 0;
/// Bus type string of an ISA bus.
const BUS_TYPE_ISA: [u8; 6] = *b"ISA   ";

/// IOAPIC version reported (that of KVM's in-kernel IOAPIC).
const IOAPIC_VERSION: u8 = 0x11;
/// IOAPIC flag: the IOAPIC is usable.
const IOAPIC_USABLE: u8 = 1 << 0;

/// Interrupt type: vectored interrupt from the IOAPIC.
const MP_IRQ_INT: u8 = 0;
/// Interrupt type: non-maskable interrupt.
const MP_IRQ_NMI: u8 = 1;
/// Interrupt type: external interrupt from the 8259 PIC.
const MP_IRQ_EXTINT: u8 = 3;
/// Interrupt flags: polarity and trigger mode conform to the bus (ISA: edge, high).
const MP_IRQ_FLAGS_CONFORM: u16 = 0;
/// Destination APIC id meaning every local APIC.
const MP_ALL_APICS: u8 = 0xff;
/// Local APIC input LINT0.
const LINT0: u8 = 0;
/// Local APIC input LINT1.
const LINT1: u8 = 1;

const _: () = assert!(IOAPIC_NUM_PINS <= u8::MAX as u32 + 1);
// Both APIC addresses go into 32-bit fields.
const _: () = assert!(IOAPIC_START <= u32::MAX as u64);
const _: () = assert!(APIC_START <= u32::MAX as u64);

/// MP floating pointer structure.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default)]
struct MpfIntel {
    signature: [u8; 4],
    physptr: u32,
    length: u8,
    specrev: u8,
    checksum: u8,
    feature1: u8,
    feature2: u8,
    feature3: [u8; 3],
}

/// MP configuration table header.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default)]
struct MpcTable {
    signature: [u8; 4],
    length: u16,
    spec: u8,
    checksum: u8,
    oem: [u8; 8],
    productid: [u8; 12],
    oemptr: u32,
    oemsize: u16,
    oemcount: u16,
    lapic: u32,
    exttbllen: u16,
    exttblchksum: u8,
    reserved: u8,
}

/// Processor entry.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default)]
struct MpcCpu {
    type_: u8,
    apicid: u8,
    apicver: u8,
    cpuflag: u8,
    cpufeature: u32,
    featureflag: u32,
    reserved: [u32; 2],
}

/// Bus entry.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default)]
struct MpcBus {
    type_: u8,
    busid: u8,
    bustype: [u8; 6],
}

/// IOAPIC entry.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default)]
struct MpcIoapic {
    type_: u8,
    apicid: u8,
    apicver: u8,
    flags: u8,
    apicaddr: u32,
}

/// I/O interrupt assignment entry.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default)]
struct MpcIntsrc {
    type_: u8,
    irqtype: u8,
    irqflag: u16,
    srcbus: u8,
    srcbusirq: u8,
    dstapic: u8,
    dstirq: u8,
}

/// Local interrupt assignment entry.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default)]
struct MpcLintsrc {
    type_: u8,
    irqtype: u8,
    irqflag: u16,
    srcbusid: u8,
    srcbusirq: u8,
    destapic: u8,
    destapiclint: u8,
}

// SAFETY: MpfIntel is repr(C, packed) and made only of integers and byte arrays, so it
// has no padding bytes and every bit pattern is a valid value.
unsafe impl ByteValued for MpfIntel {}
// SAFETY: MpcTable is repr(C, packed) and made only of integers and byte arrays, so it
// has no padding bytes and every bit pattern is a valid value.
unsafe impl ByteValued for MpcTable {}
// SAFETY: MpcCpu is repr(C, packed) and made only of integers and integer arrays, so
// it has no padding bytes and every bit pattern is a valid value.
unsafe impl ByteValued for MpcCpu {}
// SAFETY: MpcBus is repr(C, packed) and made only of integers and byte arrays, so it
// has no padding bytes and every bit pattern is a valid value.
unsafe impl ByteValued for MpcBus {}
// SAFETY: MpcIoapic is repr(C, packed) and made only of integers, so it has no padding
// bytes and every bit pattern is a valid value.
unsafe impl ByteValued for MpcIoapic {}
// SAFETY: MpcIntsrc is repr(C, packed) and made only of integers, so it has no padding
// bytes and every bit pattern is a valid value.
unsafe impl ByteValued for MpcIntsrc {}
// SAFETY: MpcLintsrc is repr(C, packed) and made only of integers, so it has no
// padding bytes and every bit pattern is a valid value.
unsafe impl ByteValued for MpcLintsrc {}

// Sizes fixed by the MP specification.
const _: () = assert!(size_of::<MpfIntel>() == 16);
const _: () = assert!(size_of::<MpcTable>() == 44);
const _: () = assert!(size_of::<MpcCpu>() == 20);
const _: () = assert!(size_of::<MpcBus>() == 8);
const _: () = assert!(size_of::<MpcIoapic>() == 8);
const _: () = assert!(size_of::<MpcIntsrc>() == 8);
const _: () = assert!(size_of::<MpcLintsrc>() == 8);

/// Bytes available for the whole MP table, from [`MPTABLE_START`] to [`MPTABLE_END`].
pub const MPTABLE_MAX_SIZE: usize = (MPTABLE_END - MPTABLE_START) as usize;

/// Size of everything but the processor entries.
const FIXED_SIZE: usize = size_of::<MpfIntel>()
    + size_of::<MpcTable>()
    + size_of::<MpcBus>()
    + size_of::<MpcIoapic>()
    + IOAPIC_NUM_PINS as usize * size_of::<MpcIntsrc>()
    + 2 * size_of::<MpcLintsrc>();

/// Largest number of vCPUs whose MP table fits below [`MPTABLE_END`].
pub const MPTABLE_MAX_CPUS: u8 = {
    let cpus = (MPTABLE_MAX_SIZE - FIXED_SIZE) / size_of::<MpcCpu>();
    if cpus > MAX_SUPPORTED_CPUS as usize {
        MAX_SUPPORTED_CPUS
    } else {
        cpus as u8
    }
};

/// Errors while writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An MP table needs at least one processor.
    #[error("MP table needs at least one vCPU, got 0")]
    NoCpus,
    /// More vCPUs than xAPIC ids allow.
    #[error("{num_cpus} vCPUs exceed the MP table maximum of {max}")]
    TooManyCpus {
        /// Number of vCPUs requested.
        num_cpus: u8,
        /// Largest supported number.
        max: u8,
    },
    /// The table would run past the end of its area.
    #[error("MP table for {num_cpus} vCPUs needs {size} bytes, only {available} fit")]
    TableTooLarge {
        /// Number of vCPUs requested.
        num_cpus: u8,
        /// Size of the whole table in bytes.
        size: usize,
        /// Bytes between [`MPTABLE_START`] and [`MPTABLE_END`].
        available: usize,
    },
    /// The floating pointer could not be written.
    #[error("Failed to write the MP floating pointer at {addr:#x}")]
    WriteFloatingPointer {
        /// Guest-physical address of the floating pointer.
        addr: u64,
        /// The guest memory error.
        #[source]
        source: GuestMemoryError,
    },
    /// The configuration table could not be written.
    #[error("Failed to write the MP configuration table at {addr:#x}")]
    WriteConfigTable {
        /// Guest-physical address of the configuration table.
        addr: u64,
        /// The guest memory error.
        #[source]
        source: GuestMemoryError,
    },
}

/// Returns the value that makes the bytes of `parts` sum to 0 modulo 256.
fn checksum(parts: &[&[u8]]) -> u8 {
    let sum = parts
        .iter()
        .flat_map(|part| part.iter())
        .fold(0u8, |acc, byte| acc.wrapping_add(*byte));
    0u8.wrapping_sub(sum)
}

/// Size in bytes of the whole MP table (floating pointer included) that
/// [`setup_mptable`] writes for `num_cpus` vCPUs.
pub fn mptable_size(num_cpus: u8) -> usize {
    // At most 255 entries of 20 bytes on top of a few hundred: far from overflow.
    FIXED_SIZE + usize::from(num_cpus) * size_of::<MpcCpu>()
}

/// Appends the bytes of `entry` to `buf`.
fn push<T: ByteValued>(buf: &mut Vec<u8>, entry: T) {
    buf.extend_from_slice(entry.as_slice());
}

/// Returns the entries of the configuration table and how many there are.
fn config_entries(num_cpus: u8, ioapic_id: u8) -> (Vec<u8>, u16) {
    let mut buf = Vec::with_capacity(mptable_size(num_cpus));
    let mut count: u16 = 0;

    for apic_id in 0..num_cpus {
        let bsp = if apic_id == 0 { CPU_BOOTPROCESSOR } else { 0 };
        push(
            &mut buf,
            MpcCpu {
                type_: MP_PROCESSOR,
                apicid: apic_id,
                apicver: APIC_VERSION,
                cpuflag: CPU_ENABLED | bsp,
                cpufeature: CPU_SIGNATURE,
                featureflag: CPU_FEATURE_APIC | CPU_FEATURE_FPU,
                reserved: [0; 2],
            },
        );
        count += 1;
    }
    push(
        &mut buf,
        MpcBus {
            type_: MP_BUS,
            busid: ISA_BUS_ID,
            bustype: BUS_TYPE_ISA,
        },
    );
    push(
        &mut buf,
        MpcIoapic {
            type_: MP_IOAPIC,
            apicid: ioapic_id,
            apicver: IOAPIC_VERSION,
            flags: IOAPIC_USABLE,
            apicaddr: IOAPIC_START as u32,
        },
    );
    count += 2;
    // IOAPIC_NUM_PINS <= 256 (asserted above), so every pin number fits in a u8.
    for pin in (0..=u8::MAX).take(IOAPIC_NUM_PINS as usize) {
        push(
            &mut buf,
            MpcIntsrc {
                type_: MP_INTSRC,
                irqtype: MP_IRQ_INT,
                irqflag: MP_IRQ_FLAGS_CONFORM,
                srcbus: ISA_BUS_ID,
                srcbusirq: pin,
                dstapic: ioapic_id,
                dstirq: pin,
            },
        );
        count += 1;
    }
    for (irqtype, lint) in [(MP_IRQ_EXTINT, LINT0), (MP_IRQ_NMI, LINT1)] {
        push(
            &mut buf,
            MpcLintsrc {
                type_: MP_LINTSRC,
                irqtype,
                irqflag: MP_IRQ_FLAGS_CONFORM,
                srcbusid: ISA_BUS_ID,
                srcbusirq: 0,
                destapic: MP_ALL_APICS,
                destapiclint: lint,
            },
        );
        count += 1;
    }
    (buf, count)
}

/// Returns the configuration table (header and entries) for `num_cpus` vCPUs.
fn config_table(num_cpus: u8, ioapic_id: u8) -> Vec<u8> {
    let (entries, count) = config_entries(num_cpus, ioapic_id);
    // The caller checked the whole table against MPTABLE_MAX_SIZE (1 KiB).
    let length = u16::try_from(size_of::<MpcTable>() + entries.len()).unwrap_or(u16::MAX);
    let mut header = MpcTable {
        signature: MPC_SIGNATURE,
        length,
        spec: MP_SPEC_REV,
        oem: MPC_OEM,
        productid: MPC_PRODUCT_ID,
        oemcount: count,
        lapic: APIC_START as u32,
        ..Default::default()
    };
    header.checksum = checksum(&[header.as_slice(), &entries]);

    let mut table = Vec::with_capacity(usize::from(length));
    push(&mut table, header);
    table.extend_from_slice(&entries);
    table
}

/// Writes an MP table describing `num_cpus` vCPUs (APIC ids 0..num_cpus, 0 is the
/// BSP), one ISA bus, the IOAPIC and its pins, and LINT0/LINT1 at [`MPTABLE_START`].
pub fn setup_mptable<M: GuestMemoryBackend>(mem: &M, num_cpus: u8) -> Result<(), Error> {
    if num_cpus == 0 {
        return Err(Error::NoCpus);
    }
    if num_cpus > MAX_SUPPORTED_CPUS {
        return Err(Error::TooManyCpus {
            num_cpus,
            max: MAX_SUPPORTED_CPUS,
        });
    }
    let size = mptable_size(num_cpus);
    if size > MPTABLE_MAX_SIZE {
        return Err(Error::TableTooLarge {
            num_cpus,
            size,
            available: MPTABLE_MAX_SIZE,
        });
    }
    // num_cpus <= MAX_SUPPORTED_CPUS (254), so the id is at most 255.
    let ioapic_id = num_cpus + 1;
    let table = config_table(num_cpus, ioapic_id);

    let fp_addr = MPTABLE_START;
    let config_addr = MPTABLE_START + size_of::<MpfIntel>() as u64;
    let mut fp = MpfIntel {
        signature: MPF_SIGNATURE,
        // Below MPTABLE_END (checked above), so it fits in 32 bits.
        physptr: config_addr as u32,
        length: 1,
        specrev: MP_SPEC_REV,
        ..Default::default()
    };
    fp.checksum = checksum(&[fp.as_slice()]);

    mem.write_obj(fp, GuestAddress(fp_addr))
        .map_err(|source| Error::WriteFloatingPointer {
            addr: fp_addr,
            source,
        })?;
    mem.write_slice(&table, GuestAddress(config_addr))
        .map_err(|source| Error::WriteConfigTable {
            addr: config_addr,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn test_memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
    }

    fn read_fp(mem: &GuestMemoryMmap) -> MpfIntel {
        mem.read_obj(GuestAddress(MPTABLE_START)).unwrap()
    }

    fn read_header(mem: &GuestMemoryMmap) -> MpcTable {
        let fp = read_fp(mem);
        mem.read_obj(GuestAddress(u64::from(fp.physptr))).unwrap()
    }

    /// Returns the configuration table (header and entries) as written.
    fn read_config(mem: &GuestMemoryMmap) -> Vec<u8> {
        let fp = read_fp(mem);
        let header = read_header(mem);
        let mut table = vec![0u8; usize::from(header.length)];
        mem.read_slice(&mut table, GuestAddress(u64::from(fp.physptr)))
            .unwrap();
        table
    }

    /// Splits the entries after the header into slices, one per entry.
    fn entries(table: &[u8]) -> Vec<&[u8]> {
        let mut rest = &table[size_of::<MpcTable>()..];
        let mut out = Vec::new();
        while let Some(&kind) = rest.first() {
            let len = if kind == MP_PROCESSOR {
                size_of::<MpcCpu>()
            } else {
                8
            };
            let (entry, tail) = rest.split_at(len);
            out.push(entry);
            rest = tail;
        }
        out
    }

    fn cpus(table: &[u8]) -> Vec<MpcCpu> {
        entries(table)
            .into_iter()
            .filter(|e| e[0] == MP_PROCESSOR)
            .map(|e| *MpcCpu::from_slice(e).unwrap())
            .collect()
    }

    #[test]
    fn setup_mptable_floating_pointer_is_valid() {
        let mem = test_memory();

        setup_mptable(&mem, 1).unwrap();

        let fp = read_fp(&mem);
        assert_eq!(fp.signature, *b"_MP_");
        let physptr = fp.physptr;
        assert_eq!(u64::from(physptr), MPTABLE_START + 16);
        assert_eq!((fp.length, fp.specrev), (1, 4));
        assert_eq!(sum(fp.as_slice()), 0);
    }

    #[test]
    fn setup_mptable_header_is_valid() {
        let mem = test_memory();

        setup_mptable(&mem, 2).unwrap();

        let header = read_header(&mem);
        assert_eq!(header.signature, *b"PCMP");
        assert_eq!(header.spec, 4);
        assert_eq!({ header.lapic }, 0xfee0_0000);
        assert_eq!(usize::from(header.length), mptable_size(2) - 16);
        assert_eq!(sum(&read_config(&mem)), 0);
    }

    #[test]
    fn setup_mptable_entry_count_matches_header() {
        let mem = test_memory();

        setup_mptable(&mem, 4).unwrap();

        let header = read_header(&mem);
        let table = read_config(&mem);
        assert_eq!(usize::from(header.oemcount), entries(&table).len());
        assert_eq!(usize::from(header.oemcount), 4 + 1 + 1 + 24 + 2);
    }

    #[test]
    fn setup_mptable_one_processor_entry_per_cpu() {
        let mem = test_memory();

        setup_mptable(&mem, 4).unwrap();

        let cpus = cpus(&read_config(&mem));
        assert_eq!(cpus.len(), 4);
        for (index, cpu) in cpus.iter().enumerate() {
            assert_eq!(usize::from(cpu.apicid), index);
            let expected = if index == 0 { 0x3 } else { 0x1 };
            assert_eq!(cpu.cpuflag, expected);
        }
    }

    #[test]
    fn setup_mptable_ioapic_and_interrupts_are_described() {
        let mem = test_memory();

        setup_mptable(&mem, 3).unwrap();

        let table = read_config(&mem);
        let all = entries(&table);
        let bus = MpcBus::from_slice(all[3]).unwrap();
        assert_eq!((bus.type_, bus.bustype), (MP_BUS, *b"ISA   "));
        let ioapic = MpcIoapic::from_slice(all[4]).unwrap();
        assert_eq!(
            (ioapic.type_, ioapic.apicid, ioapic.flags),
            (MP_IOAPIC, 4, 1)
        );
        assert_eq!({ ioapic.apicaddr }, 0xfec0_0000);
        let intsrcs: Vec<&MpcIntsrc> = all
            .iter()
            .filter(|e| e[0] == MP_INTSRC)
            .map(|e| MpcIntsrc::from_slice(e).unwrap())
            .collect();
        assert_eq!(intsrcs.len(), 24);
        for (pin, src) in intsrcs.iter().enumerate() {
            assert_eq!(usize::from(src.srcbusirq), pin);
            assert_eq!(usize::from(src.dstirq), pin);
            assert_eq!(src.dstapic, 4);
        }
        let lints: Vec<&MpcLintsrc> = all
            .iter()
            .filter(|e| e[0] == MP_LINTSRC)
            .map(|e| MpcLintsrc::from_slice(e).unwrap())
            .collect();
        assert_eq!(lints.len(), 2);
        assert_eq!(
            (lints[0].irqtype, lints[0].destapiclint),
            (MP_IRQ_EXTINT, 0)
        );
        assert_eq!((lints[1].irqtype, lints[1].destapiclint), (MP_IRQ_NMI, 1));
    }

    #[test]
    fn setup_mptable_largest_fitting_table_ends_in_its_area() {
        let mem = test_memory();
        // The BIOS area has room for every vCPU an xAPIC can address.
        assert_eq!(MPTABLE_MAX_CPUS, MAX_SUPPORTED_CPUS);

        setup_mptable(&mem, MPTABLE_MAX_CPUS).unwrap();

        let header = read_header(&mem);
        let end = MPTABLE_START + 16 + u64::from(header.length);
        assert!(end <= MPTABLE_END);
        assert_eq!(
            cpus(&read_config(&mem)).len(),
            usize::from(MPTABLE_MAX_CPUS)
        );
        assert_eq!(sum(&read_config(&mem)), 0);
    }

    #[test]
    fn setup_mptable_too_many_cpus_fails() {
        let mem = test_memory();

        let err = setup_mptable(&mem, 255).unwrap_err();

        assert!(matches!(
            err,
            Error::TooManyCpus {
                num_cpus: 255,
                max: 254
            }
        ));
    }

    #[test]
    fn setup_mptable_zero_cpus_fails() {
        let mem = test_memory();

        let err = setup_mptable(&mem, 0).unwrap_err();

        assert!(matches!(err, Error::NoCpus));
    }

    #[test]
    fn setup_mptable_memory_ending_before_the_table_fails() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0xf0000)]).unwrap();

        let err = setup_mptable(&mem, 1).unwrap_err();

        assert!(matches!(
            err,
            Error::WriteFloatingPointer { addr: 0xf0000, .. }
        ));
    }

    #[test]
    fn checksum_makes_bytes_sum_to_zero() {
        let bytes = [0x12u8, 0xff, 0x80];

        let check = checksum(&[&bytes]);

        assert_eq!(sum(&bytes).wrapping_add(check), 0);
    }
}
