//! ACPI tables for a hardware-reduced x86_64 machine, built with the rust-vmm
//! `acpi_tables` crate and written to [`ACPI_TABLES_START`]:
//!
//! - **RSDP** (first, where Linux scans for it; its address also goes in the zero
//!   page) pointing at the **XSDT**, which lists the FADT and the MADT;
//! - **FADT**: hardware-reduced ACPI (no PM timer, no fixed-hardware events, no
//!   legacy PIC), control-method power and sleep buttons, and the sleep control and
//!   status registers of the power-management device at [`ACPI_PM_PORT`]: writing
//!   `SLP_TYP << 2 | SLP_EN` with the `_S5_` type powers the machine off;
//! - **MADT**: the local APIC of every vCPU (APIC id = vCPU index) and the IOAPIC;
//! - **DSDT**: COM1, the i8042, every virtio-mmio device (`LNRO0005`, its register
//!   window and interrupt, in attach order so the guest names disks as the command
//!   line does), a generic event device (`ACPI0013`) whose `_EVT` turns the
//!   power-management device's event register into a Notify of the power button
//!   (`PNP0C0C`), and `_S5_`.
//!
//! Kernels without ACPI ignore all of it and use the MP table and the command line.

use acpi_tables::aml::{
    self, Device, Equal, FieldAccessType, FieldEntry, FieldLockRule, FieldUpdateRule, If,
    Interrupt, Local, Memory32Fixed, Method, Name, Notify, OpRegion, OpRegionSpace, Package, Path,
    ResourceTemplate, Scope, Store, IO,
};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError};

use crate::layout::{
    ACPI_GED_IRQ, ACPI_PM_PORT, ACPI_TABLES_END, ACPI_TABLES_START, APIC_START, I8042_IRQ,
    I8042_PORT, IOAPIC_START, MAX_SUPPORTED_CPUS, SERIAL_COM1_IRQ, SERIAL_COM1_PORT,
    SERIAL_COM1_PORT_LEN,
};

const OEM_ID: [u8; 6] = *b"CABIN ";
const OEM_TABLE_ID: [u8; 8] = *b"CABINVM ";
const OEM_REVISION: u32 = 1;

/// Sleep type of S5 (soft off) in the `_S5_` package; the value the guest writes
/// to the sleep control register is `SLEEP_TYPE_S5 << 2 | SLEEP_ENABLE`.
pub const SLEEP_TYPE_S5: u8 = 5;
/// The SLP_EN bit of the sleep control register.
pub const SLEEP_ENABLE: u8 = 1 << 5;
/// Offset of the sleep control register from [`ACPI_PM_PORT`].
pub const SLEEP_CONTROL_OFFSET: u16 = 0;
/// Offset of the sleep status register from [`ACPI_PM_PORT`].
pub const SLEEP_STATUS_OFFSET: u16 = 1;
/// Offset of the generic event device's event register from [`ACPI_PM_PORT`]:
/// reading it returns the pending events and clears them.
pub const GED_EVENT_OFFSET: u16 = 2;
/// Bit of the GED event register: the power button was pressed.
pub const GED_EVENT_POWER_BUTTON: u8 = 1 << 0;

/// FADT IA-PC boot architecture flags: an 8042 is present; there is no VGA, no
/// MSI and no CMOS RTC (so Linux does not probe for them).
const IAPC_BOOT_ARCH: u16 = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5);

/// The ACPI tables' alignment in guest memory.
const TABLE_ALIGN: u64 = 16;

/// A virtio-mmio device as the DSDT describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDevice {
    /// Guest-physical base of its register window.
    pub addr: u64,
    /// Size of the window in bytes.
    pub len: u64,
    /// Its GSI (an IOAPIC pin).
    pub gsi: u32,
}

/// Errors while writing the tables.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// More vCPUs than xAPIC ids allow.
    #[error("{0} vCPUs exceed the MADT maximum of {MAX_SUPPORTED_CPUS}")]
    TooManyCpus(usize),
    /// A device window that does not fit the 32-bit descriptor.
    #[error("virtio-mmio window {addr:#x}+{len:#x} is not below 4 GiB")]
    WindowAbove4G {
        /// Base address.
        addr: u64,
        /// Size.
        len: u64,
    },
    /// The tables do not fit their area.
    #[error("ACPI tables of {size} bytes do not fit in the {available} bytes reserved")]
    TooLarge {
        /// Bytes needed.
        size: u64,
        /// Bytes available.
        available: u64,
    },
    /// Guest memory could not be written.
    #[error("Cannot write the ACPI tables to guest memory")]
    Write(#[source] GuestMemoryError),
}

/// Serialized bytes as an AML object, to nest pre-built pieces.
struct Raw(Vec<u8>);

impl Aml for Raw {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

fn bytes_of(aml: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    bytes
}

/// Writes RSDP, XSDT, FADT, MADT and DSDT for `num_vcpus` vCPUs and the virtio-mmio
/// `devices` (in attach order); returns the RSDP's address for the zero page.
pub fn setup_acpi<M: GuestMemoryBackend>(
    mem: &M,
    num_vcpus: usize,
    devices: &[MmioDevice],
) -> Result<GuestAddress, Error> {
    let tables = build_tables(num_vcpus, devices)?;
    let size = tables.len() as u64;
    let available = ACPI_TABLES_END - ACPI_TABLES_START;
    if size > available {
        return Err(Error::TooLarge { size, available });
    }
    mem.write_slice(&tables, GuestAddress(ACPI_TABLES_START))
        .map_err(Error::Write)?;
    Ok(GuestAddress(ACPI_TABLES_START))
}

fn align(offset: u64) -> u64 {
    offset.div_ceil(TABLE_ALIGN) * TABLE_ALIGN
}

/// The whole area as it is written at [`ACPI_TABLES_START`]: RSDP, DSDT, FADT, MADT,
/// XSDT, each 16-byte aligned.
fn build_tables(num_vcpus: usize, devices: &[MmioDevice]) -> Result<Vec<u8>, Error> {
    let dsdt = dsdt(devices)?;
    let madt = madt(num_vcpus)?;
    let dsdt_at = align(Rsdp::len() as u64);
    let fadt_at = align(dsdt_at + dsdt.len() as u64);
    let fadt = fadt(ACPI_TABLES_START + dsdt_at);
    let madt_at = align(fadt_at + fadt.len() as u64);
    let xsdt_at = align(madt_at + madt.len() as u64);
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(ACPI_TABLES_START + fadt_at);
    xsdt.add_entry(ACPI_TABLES_START + madt_at);
    let xsdt = bytes_of(&xsdt);
    let rsdp = bytes_of(&Rsdp::new(OEM_ID, ACPI_TABLES_START + xsdt_at));

    let mut area = Vec::new();
    for (at, table) in [
        (0, &rsdp),
        (dsdt_at, &dsdt),
        (fadt_at, &fadt),
        (madt_at, &madt),
        (xsdt_at, &xsdt),
    ] {
        // Offsets only grow and are usize-sized (the area is 64 KiB).
        area.resize(at as usize, 0);
        area.extend_from_slice(table);
    }
    Ok(area)
}

/// FADT: hardware-reduced, control-method buttons, the sleep registers.
fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let port = |offset: u16| {
        GAS::new(
            AddressSpace::SystemIo,
            8,
            0,
            AccessSize::ByteAccess,
            u64::from(ACPI_PM_PORT + offset),
        )
    };
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.sleep_control_reg = port(SLEEP_CONTROL_OFFSET);
    fadt.sleep_status_reg = port(SLEEP_STATUS_OFFSET);
    fadt.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    bytes_of(&fadt.finalize())
}

/// MADT: one enabled local APIC per vCPU, then the IOAPIC (with the id the MP table
/// gives it), routing GSIs from 0.
fn madt(num_vcpus: usize) -> Result<Vec<u8>, Error> {
    let count = u8::try_from(num_vcpus)
        .ok()
        .filter(|n| *n <= MAX_SUPPORTED_CPUS)
        .ok_or(Error::TooManyCpus(num_vcpus))?;
    // Both are below 4 GiB (asserted in layout.rs).
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(APIC_START as u32),
    );
    for id in 0..count {
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(count + 1, IOAPIC_START as u32, 0));
    Ok(bytes_of(&madt))
}

/// A named device with `_HID`, `_UID` and a `_CRS` of `resources`.
fn device(name: &str, hid: &dyn Aml, uid: u32, resources: &[&dyn Aml]) -> Vec<u8> {
    let hid = Name::new("_HID".into(), hid);
    let uid = Name::new("_UID".into(), &uid);
    let crs = Raw(bytes_of(&ResourceTemplate::new(resources.to_vec())));
    let crs = Name::new("_CRS".into(), &crs);
    bytes_of(&Device::new(name.into(), vec![&hid, &uid, &crs]))
}

/// An edge-triggered, active-high, exclusive interrupt the device consumes.
fn edge_irq(gsi: u32) -> Interrupt {
    Interrupt::new(true, true, false, false, gsi)
}

fn virtio_device(index: usize, dev: &MmioDevice) -> Result<Vec<u8>, Error> {
    let above = || Error::WindowAbove4G {
        addr: dev.addr,
        len: dev.len,
    };
    let addr = u32::try_from(dev.addr).map_err(|_| above())?;
    let len = u32::try_from(dev.len).map_err(|_| above())?;
    addr.checked_add(len).ok_or_else(above)?;
    // At most IRQ_MAX - IRQ_BASE + 1 devices, so three hex digits always suffice.
    let name = format!("V{:03X}", index & 0xfff);
    let window = Memory32Fixed::new(true, addr, len);
    let irq = edge_irq(dev.gsi);
    let uid = u32::try_from(index).unwrap_or(u32::MAX);
    Ok(device(&name, &"LNRO0005", uid, &[&window, &irq]))
}

/// The generic event device and the power button it notifies.
fn power_button() -> Vec<u8> {
    let irq = edge_irq(ACPI_GED_IRQ);
    let crs = Raw(bytes_of(&ResourceTemplate::new(vec![&irq])));
    let event_port = usize::from(ACPI_PM_PORT + GED_EVENT_OFFSET);
    let region = OpRegion::new("GDST".into(), OpRegionSpace::SystemIO, &event_port, &1usize);
    let field = aml::Field::new(
        "GDST".into(),
        FieldAccessType::Byte,
        FieldLockRule::NoLock,
        FieldUpdateRule::WriteAsZeroes,
        vec![FieldEntry::Named(*b"GDAT", 8)],
    );
    // _EVT(gsi): Local0 = GDAT (read-and-clear); if the power-button bit is set,
    // Notify(PWRB, 0x80) ("button pressed").
    let events = Local(0);
    let gdat = Path::new("GDAT");
    let read = Store::new(&events, &gdat);
    let bit = GED_EVENT_POWER_BUTTON;
    let masked = aml::And::new(&Local(1), &events, &bit);
    let pressed = Equal::new(&masked, &bit);
    let pwrb = Path::new("\\_SB_.PWRB");
    let notify = Notify::new(&pwrb, &0x80u8);
    let when = If::new(&pressed, vec![&notify]);
    let evt = Method::new("_EVT".into(), 1, true, vec![&read, &when]);
    let hid = Name::new("_HID".into(), &"ACPI0013");
    let uid = Name::new("_UID".into(), &0u32);
    let crs = Name::new("_CRS".into(), &crs);
    let ged = Device::new("GED_".into(), vec![&hid, &uid, &crs, &region, &field, &evt]);
    let button_hid = Name::new("_HID".into(), &aml::EISAName::new("PNP0C0C"));
    let button = Device::new("PWRB".into(), vec![&button_hid, &uid]);
    let mut bytes = bytes_of(&ged);
    bytes.extend(bytes_of(&button));
    bytes
}

/// The legacy devices: COM1 and the i8042 (so drivers that probe through ACPI
/// find them and their interrupts).
fn legacy_devices() -> Vec<u8> {
    let com1_io = IO::new(
        SERIAL_COM1_PORT,
        SERIAL_COM1_PORT,
        1,
        // 8 ports (asserted in layout.rs to be small).
        SERIAL_COM1_PORT_LEN as u8,
    );
    let com1_irq = edge_irq(SERIAL_COM1_IRQ);
    let mut bytes = device(
        "COM1",
        &aml::EISAName::new("PNP0501"),
        0,
        &[&com1_io, &com1_irq],
    );
    let data = IO::new(I8042_PORT, I8042_PORT, 1, 1);
    let command = IO::new(I8042_PORT + 4, I8042_PORT + 4, 1, 1);
    let kbd_irq = edge_irq(I8042_IRQ);
    bytes.extend(device(
        "PS2K",
        &aml::EISAName::new("PNP0303"),
        0,
        &[&data, &command, &kbd_irq],
    ));
    bytes
}

/// DSDT: `\_SB_` with the legacy devices, the virtio devices in order and the power
/// button; `_S5_` at the root.
fn dsdt(devices: &[MmioDevice]) -> Result<Vec<u8>, Error> {
    let mut sb = legacy_devices();
    for (index, dev) in devices.iter().enumerate() {
        sb.extend(virtio_device(index, dev)?);
    }
    sb.extend(power_button());
    let sb = Raw(sb);
    let scope = Scope::new("\\_SB_".into(), vec![&sb]);
    let s5 = Name::new("_S5_".into(), &Package::new(vec![&SLEEP_TYPE_S5]));
    let mut dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    dsdt.append_slice(&bytes_of(&scope));
    dsdt.append_slice(&bytes_of(&s5));
    Ok(dsdt.as_slice().to_vec())
}

#[cfg(test)]
#[path = "acpi_tests.rs"]
mod tests;
