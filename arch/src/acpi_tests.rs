use vm_memory::GuestMemoryMmap;

use super::*;
use crate::layout::{IRQ_BASE, IRQ_MAX, VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START};

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

fn virtio(count: u32) -> Vec<MmioDevice> {
    (0..count)
        .map(|i| MmioDevice {
            addr: VIRTIO_MMIO_START + u64::from(i) * VIRTIO_MMIO_SIZE,
            len: VIRTIO_MMIO_SIZE,
            gsi: IRQ_BASE + i,
        })
        .collect()
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// The tables as a guest finds them: RSDP at the start of the area, then by pointer.
struct Found {
    xsdt: Vec<u8>,
    fadt: Vec<u8>,
    madt: Vec<u8>,
    dsdt: Vec<u8>,
}

fn read_table(mem: &GuestMemoryMmap, addr: u64, signature: &[u8; 4]) -> Vec<u8> {
    let mut header = [0u8; 36];
    mem.read_slice(&mut header, GuestAddress(addr)).unwrap();
    assert_eq!(&header[..4], signature, "table at {addr:#x}");
    let len = u32_at(&header, 4) as usize;
    assert!(len >= 36);
    let mut table = vec![0u8; len];
    mem.read_slice(&mut table, GuestAddress(addr)).unwrap();
    // Every table's bytes, checksum included, sum to zero.
    assert_eq!(
        sum(&table),
        0,
        "{} checksum",
        String::from_utf8_lossy(signature)
    );
    assert!(addr + len as u64 <= ACPI_TABLES_END);
    table
}

fn find(mem: &GuestMemoryMmap, rsdp_addr: GuestAddress) -> Found {
    assert_eq!(rsdp_addr, GuestAddress(ACPI_TABLES_START));
    let mut rsdp = [0u8; 36];
    mem.read_slice(&mut rsdp, rsdp_addr).unwrap();
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(rsdp[15], 2, "ACPI 2.0+ RSDP");
    assert_eq!(sum(&rsdp[..20]), 0, "RSDP checksum");
    assert_eq!(sum(&rsdp), 0, "RSDP extended checksum");
    assert_eq!(u32_at(&rsdp, 20), 36);
    let xsdt = read_table(mem, u64_at(&rsdp, 24), b"XSDT");
    assert_eq!(xsdt.len(), 36 + 2 * 8);
    let fadt = read_table(mem, u64_at(&xsdt, 36), b"FACP");
    let madt = read_table(mem, u64_at(&xsdt, 44), b"APIC");
    // FADT X_DSDT (offset 140); the 32-bit DSDT field stays 0.
    assert_eq!(u32_at(&fadt, 40), 0);
    let dsdt = read_table(mem, u64_at(&fadt, 140), b"DSDT");
    Found {
        xsdt,
        fadt,
        madt,
        dsdt,
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[test]
fn tables_are_linked_checksummed_and_inside_their_area() {
    let mem = memory();
    let rsdp = setup_acpi(&mem, 4, &virtio(3)).unwrap();
    let found = find(&mem, rsdp);
    assert_eq!(found.fadt.len(), 276, "an ACPI 6.5 FADT");
    assert_eq!(&found.xsdt[10..16], b"CABIN ");
}

#[test]
fn fadt_is_hardware_reduced_with_the_sleep_registers() {
    let mem = memory();
    let found = find(&mem, setup_acpi(&mem, 1, &[]).unwrap());
    let flags = u32_at(&found.fadt, 112);
    assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
    assert_ne!(
        flags & (1 << 4),
        0,
        "power button is a control-method device"
    );
    // SLEEP_CONTROL_REG (offset 244) and SLEEP_STATUS_REG (256): system I/O,
    // 8 bits wide, byte access, at the power-management ports.
    for (at, port) in [(244, ACPI_PM_PORT), (256, ACPI_PM_PORT + 1)] {
        let gas = &found.fadt[at..at + 12];
        assert_eq!(&gas[..4], &[1, 8, 0, 1]);
        assert_eq!(u64_at(gas, 4), u64::from(port));
    }
    // IAPC_BOOT_ARCH (offset 109): 8042 present, no VGA, no MSI, no CMOS RTC.
    assert_eq!(
        u16::from_le_bytes([found.fadt[109], found.fadt[110]]),
        0b10_1110
    );
}

#[test]
fn madt_has_one_enabled_local_apic_per_vcpu_and_the_ioapic() {
    for vcpus in [1usize, 2, 37, 64, usize::from(MAX_SUPPORTED_CPUS)] {
        let mem = memory();
        let found = find(&mem, setup_acpi(&mem, vcpus, &virtio(19)).unwrap());
        let madt = &found.madt;
        assert_eq!(u32_at(madt, 36), APIC_START as u32);
        let mut apics = Vec::new();
        let mut ioapics = Vec::new();
        let mut at = 44;
        while at < madt.len() {
            let (kind, len) = (madt[at], usize::from(madt[at + 1]));
            assert!(len >= 2 && at + len <= madt.len(), "MADT entry at {at}");
            match kind {
                0 => {
                    assert_eq!(len, 8);
                    // UID, APIC id, flags = enabled.
                    apics.push((madt[at + 2], madt[at + 3], u32_at(madt, at + 4)));
                }
                1 => ioapics.push((madt[at + 2], u32_at(madt, at + 4), u32_at(madt, at + 8))),
                other => panic!("unexpected MADT entry type {other}"),
            }
            at += len;
        }
        assert_eq!(at, madt.len());
        let expected: Vec<_> = (0..vcpus).map(|i| (i as u8, i as u8, 1)).collect();
        assert_eq!(apics, expected, "{vcpus} vCPUs");
        assert_eq!(ioapics, vec![(vcpus as u8 + 1, IOAPIC_START as u32, 0)]);
    }
}

#[test]
fn madt_refuses_more_vcpus_than_xapic_ids() {
    let mem = memory();
    let err = setup_acpi(&mem, usize::from(MAX_SUPPORTED_CPUS) + 1, &[]).unwrap_err();
    assert!(matches!(err, Error::TooManyCpus(255)), "{err}");
}

/// The Memory32Fixed descriptor of a window and the extended interrupt
/// descriptor of a GSI (consumer, edge, active high, exclusive), as ACPI encodes them.
fn window_descriptor(addr: u64, len: u64) -> Vec<u8> {
    let mut d = vec![0x86, 0x09, 0x00, 0x01];
    d.extend((addr as u32).to_le_bytes());
    d.extend((len as u32).to_le_bytes());
    d
}

fn irq_descriptor(gsi: u32) -> Vec<u8> {
    let mut d = vec![0x89, 0x06, 0x00, 0b0011, 0x01];
    d.extend(gsi.to_le_bytes());
    d
}

#[test]
fn dsdt_describes_every_virtio_device_with_its_window_and_interrupt() {
    let all = IRQ_MAX - IRQ_BASE + 1;
    for n in [0, 1, 3, all] {
        let mem = memory();
        let devices = virtio(n);
        let found = find(&mem, setup_acpi(&mem, 2, &devices).unwrap());
        let dsdt = &found.dsdt;
        assert_eq!(count(dsdt, b"LNRO0005\0"), n as usize);
        let mut last = 0;
        for (i, dev) in devices.iter().enumerate() {
            let window = window_descriptor(dev.addr, dev.len);
            assert_eq!(count(dsdt, &window), 1, "device {i}");
            let at = dsdt
                .windows(window.len())
                .position(|w| w == window)
                .unwrap();
            // Its interrupt follows its window, and devices appear in attach order.
            assert_eq!(&dsdt[at + window.len()..][..9], irq_descriptor(dev.gsi));
            assert!(at > last);
            last = at;
            let name = format!("V{i:03X}");
            assert_eq!(count(dsdt, name.as_bytes()), 1);
        }
    }
}

#[test]
fn dsdt_has_the_legacy_devices_power_button_ged_and_s5() {
    let mem = memory();
    let found = find(&mem, setup_acpi(&mem, 1, &virtio(2)).unwrap());
    let dsdt = &found.dsdt;
    assert_eq!(count(dsdt, b"ACPI0013\0"), 1, "generic event device");
    assert_eq!(count(dsdt, &irq_descriptor(ACPI_GED_IRQ)), 1);
    assert_eq!(count(dsdt, &irq_descriptor(SERIAL_COM1_IRQ)), 1);
    assert_eq!(count(dsdt, &irq_descriptor(I8042_IRQ)), 1);
    // EISA ids as AML encodes them: PNP0C0C (power button), PNP0501 (16550),
    // PNP0303 (i8042 keyboard).
    for id in [
        [0x41, 0xd0, 0x0c, 0x0c],
        [0x41, 0xd0, 0x05, 0x01],
        [0x41, 0xd0, 0x03, 0x03],
    ] {
        assert_eq!(count(dsdt, &id), 1, "{id:x?}");
    }
    for name in [b"PWRB", b"GED_", b"_EVT", b"GDAT", b"COM1", b"PS2K"] {
        assert!(count(dsdt, name) >= 1, "{}", String::from_utf8_lossy(name));
    }
    // The event register is the power-management device's third port.
    let port = ACPI_PM_PORT + GED_EVENT_OFFSET;
    assert_eq!(count(dsdt, &[0x0b, port as u8, (port >> 8) as u8]), 1);
    // Name(_S5_, Package(1) { 5 }).
    assert_eq!(count(dsdt, b"_S5_\x12\x04\x01\x0a\x05"), 1);
}

#[test]
fn the_largest_machine_fits() {
    let mem = memory();
    let devices = virtio(IRQ_MAX - IRQ_BASE + 1);
    setup_acpi(&mem, usize::from(MAX_SUPPORTED_CPUS), &devices).unwrap();
}

#[test]
fn windows_above_4g_are_refused() {
    let mem = memory();
    let far = MmioDevice {
        addr: 1 << 32,
        len: 0x1000,
        gsi: 5,
    };
    assert!(matches!(
        setup_acpi(&mem, 1, &[far]).unwrap_err(),
        Error::WindowAbove4G { .. }
    ));
}

#[test]
#[ignore = "debug aid: writes the tables to $CABIN_ACPI_DUMP for iasl -d"]
fn dump_tables() {
    let dir = std::env::var("CABIN_ACPI_DUMP").unwrap();
    let mem = memory();
    let found = find(&mem, setup_acpi(&mem, 2, &virtio(2)).unwrap());
    for (name, table) in [
        ("dsdt", &found.dsdt),
        ("facp", &found.fadt),
        ("apic", &found.madt),
    ] {
        std::fs::write(format!("{dir}/{name}.dat"), table).unwrap();
    }
}
