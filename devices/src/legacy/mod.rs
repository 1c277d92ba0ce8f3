//! Legacy PC devices on port I/O: the 16550A serial port and the i8042
//! keyboard controller, both built on `vm-superio`, and the ACPI
//! power-management device (sleep control and the power button's event), and an
//! empty PCI bus (configuration mechanism #1 with only a host bridge).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

pub mod acpi_pm;
mod i8042;
pub mod pci_host;
mod serial;

pub use acpi_pm::{AcpiPm, AcpiPmState};
pub use i8042::{I8042State, I8042};
pub use pci_host::PciHostBridge;
pub use serial::{Serial, SerialState};

/// Errors from the legacy devices.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing to the serial port's interrupt eventfd failed.
    #[error("Failed to signal the serial interrupt eventfd")]
    SerialInterrupt(#[source] io::Error),
    /// The serial port's host side failed.
    #[error("Serial port I/O failed")]
    SerialIo(#[source] io::Error),
    /// Writing to the i8042's keyboard interrupt eventfd failed.
    #[error("Failed to signal the i8042 keyboard interrupt eventfd")]
    KbdInterrupt(#[source] io::Error),
    /// The i8042 keyboard buffer cannot take a whole key sequence.
    #[error("The i8042 keyboard buffer has room for {free} bytes but {needed} are needed")]
    KbdBufferFull {
        /// Bytes the sequence needs.
        needed: usize,
        /// Bytes still free in the buffer.
        free: usize,
    },
}

/// A `vm-superio` trigger that adds one to an eventfd.
///
/// The VMM holds a clone of the eventfd and registers it as an irqfd (or
/// watches it in its event loop), so a trigger becomes an interrupt edge (or a
/// reset request).
#[derive(Debug, Clone)]
pub(crate) struct EventFdTrigger(Arc<EventFd>);

impl EventFdTrigger {
    pub(crate) fn new(evt: EventFd) -> Self {
        Self(Arc::new(evt))
    }
}

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// How a device tells the VMM that the guest ended the machine (a CPU reset through
/// the i8042, power-off through ACPI).
///
/// It raises a flag the vCPUs check before every entry into the guest, then writes
/// the eventfd the VMM waits on. The flag stops the vCPU that asked before it runs
/// another guest instruction: Linux tries other ways to reboot if the first does
/// not take at once, and its last resorts (a jump to the BIOS, a triple fault) must
/// not overtake the request the VMM has not read yet.
#[derive(Debug)]
pub struct MachineStop {
    evt: EventFd,
    raised: Arc<AtomicBool>,
}

impl MachineStop {
    /// A signal that raises `raised` and writes `evt`.
    pub fn new(evt: EventFd, raised: Arc<AtomicBool>) -> Self {
        Self { evt, raised }
    }

    /// Raises the flag, then wakes the VMM.
    pub fn signal(&self) -> io::Result<()> {
        self.raised.store(true, Ordering::Release);
        self.evt.write(1)
    }
}

impl Trigger for MachineStop {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.signal()
    }
}
