//! The ACPI power-management device of a hardware-reduced machine, on three I/O
//! ports that the VMM's FADT and DSDT point at:
//!
//! | offset | register | guest access |
//! |---|---|---|
//! | 0 | sleep control | write `SLP_TYP << 2 \| SLP_EN`; with the `_S5_` type the machine powers off |
//! | 1 | sleep status | reads 0 (the machine never wakes from a sleep state) |
//! | 2 | GED events | read returns the pending events and clears them |
//!
//! The host presses the power button with [`AcpiPm::press_power_button`]: the event
//! bit is set and the generic event device's interrupt fires; the DSDT's `_EVT`
//! reads the register and notifies the guest's power-button driver.

use std::io;

use log::{info, Level};
use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::EventFd;

use super::MachineStop;
use crate::bus::BusDevice;
use crate::ratelimit::log_ratelimited;
use crate::snapshot::RestoreError;

/// Offset of the sleep control register.
pub const SLEEP_CONTROL: u64 = 0;
/// Offset of the sleep status register.
pub const SLEEP_STATUS: u64 = 1;
/// Offset of the GED event register.
pub const GED_EVENTS: u64 = 2;
/// SLP_EN: enter the sleep state in SLP_TYP.
pub const SLEEP_ENABLE: u8 = 1 << 5;
/// The SLP_TYP of S5 (soft off), as the DSDT's `_S5_` package gives it.
pub const SLEEP_TYPE_S5: u8 = 5;
/// GED event bit: the power button was pressed.
pub const EVENT_POWER_BUTTON: u8 = 1 << 0;

/// Value of reads the device does not decode.
const UNHANDLED_READ: u8 = 0xff;

/// Sleep control, sleep status and the generic event device's register.
#[derive(Debug)]
pub struct AcpiPm {
    /// Fires when the guest powers off.
    poweroff: MachineStop,
    /// The GED interrupt (an irqfd).
    ged_irq: EventFd,
    /// Events the guest has not read yet.
    pending: u8,
}

impl AcpiPm {
    /// A device that fires `poweroff` on S5 and signals `ged_irq` for events.
    pub fn new(poweroff: MachineStop, ged_irq: EventFd) -> Self {
        AcpiPm {
            poweroff,
            ged_irq,
            pending: 0,
        }
    }

    /// Presses the power button: the guest's ACPI code sees the event on its next
    /// read of the event register, prompted by the GED interrupt.
    pub fn press_power_button(&mut self) -> io::Result<()> {
        self.pending |= EVENT_POWER_BUTTON;
        self.ged_irq.write(1)
    }

    fn write_sleep_control(&mut self, value: u8) {
        if value & SLEEP_ENABLE == 0 {
            return;
        }
        let sleep_type = (value >> 2) & 0b111;
        if sleep_type == SLEEP_TYPE_S5 {
            info!("guest powered off through ACPI (S5)");
            if let Err(e) = self.poweroff.signal() {
                log::warn!("cannot signal the guest's power-off: {e}");
            }
        } else {
            log_ratelimited!(
                Level::Warn,
                "guest asked for ACPI sleep type {sleep_type}, which this machine does not offer"
            );
        }
    }
}

/// The ACPI PM device's state: the GED events the guest has not read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcpiPmState {
    /// Pending GED event bits (`EVENT_*`).
    pub pending: u8,
}

impl AcpiPm {
    /// The device's state, for a snapshot.
    pub fn save(&self) -> AcpiPmState {
        AcpiPmState {
            pending: self.pending,
        }
    }

    /// Puts back saved pending events, refusing bits no event uses; signals the
    /// GED interrupt again if any is pending (the guest may not have taken it).
    pub fn restore(&mut self, state: &AcpiPmState) -> Result<(), RestoreError> {
        if state.pending & !EVENT_POWER_BUTTON != 0 {
            return Err(RestoreError::AcpiEvents {
                events: state.pending,
                known: EVENT_POWER_BUTTON,
            });
        }
        self.pending = state.pending;
        if self.pending != 0 {
            if let Err(e) = self.ged_irq.write(1) {
                log::warn!("cannot signal the restored ACPI event: {e}");
            }
        }
        Ok(())
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match (offset, data.len()) {
            (SLEEP_STATUS, 1) | (SLEEP_CONTROL, 1) => 0,
            (GED_EVENTS, 1) => std::mem::take(&mut self.pending),
            _ => {
                log_ratelimited!(
                    Level::Debug,
                    "ACPI PM read at offset {offset:#x} of {} bytes ignored",
                    data.len()
                );
                data.fill(UNHANDLED_READ);
                return;
            }
        };
        data[0] = value;
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            (SLEEP_CONTROL, &[value]) => self.write_sleep_control(value),
            // Status bits are write-1-to-clear; nothing is ever set.
            (SLEEP_STATUS, &[_]) => {}
            _ => log_ratelimited!(
                Level::Debug,
                "ACPI PM write at offset {offset:#x} of {} bytes ignored",
                data.len()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    use super::*;

    struct Harness {
        pm: AcpiPm,
        poweroff: EventFd,
        irq: EventFd,
        raised: Arc<AtomicBool>,
    }

    fn harness() -> Harness {
        let poweroff = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let raised = Arc::new(AtomicBool::new(false));
        Harness {
            pm: AcpiPm::new(
                MachineStop::new(poweroff.try_clone().unwrap(), raised.clone()),
                irq.try_clone().unwrap(),
            ),
            raised,
            poweroff,
            irq,
        }
    }

    fn read(pm: &mut AcpiPm, offset: u64) -> u8 {
        let mut data = [0x55];
        pm.read(offset, &mut data);
        data[0]
    }

    #[test]
    fn s5_with_sleep_enable_powers_off() {
        let mut h = harness();
        h.pm.write(SLEEP_CONTROL, &[SLEEP_TYPE_S5 << 2 | SLEEP_ENABLE]);
        assert_eq!(h.poweroff.read().unwrap(), 1);
        // The vCPU that wrote it must not enter the guest again.
        assert!(h.raised.load(Ordering::Acquire));
    }

    #[test]
    fn other_sleep_writes_do_not_power_off() {
        let mut h = harness();
        // S5 without SLP_EN, other sleep types, other widths and offsets.
        h.pm.write(SLEEP_CONTROL, &[SLEEP_TYPE_S5 << 2]);
        for sleep_type in [0u8, 1, 3, 4, 6, 7] {
            h.pm.write(SLEEP_CONTROL, &[sleep_type << 2 | SLEEP_ENABLE]);
        }
        h.pm.write(SLEEP_CONTROL, &[0x34, 0]);
        h.pm.write(SLEEP_STATUS, &[0xff]);
        h.pm.write(GED_EVENTS, &[0xff]);
        h.pm.write(7, &[0x34]);
        assert!(h.poweroff.read().is_err(), "no power-off was signalled");
        assert!(!h.raised.load(Ordering::Acquire));
    }

    #[test]
    fn power_button_raises_the_interrupt_and_the_event_reads_once() {
        let mut h = harness();
        assert_eq!(read(&mut h.pm, GED_EVENTS), 0);
        h.pm.press_power_button().unwrap();
        assert_eq!(h.irq.read().unwrap(), 1);
        assert_eq!(read(&mut h.pm, GED_EVENTS), EVENT_POWER_BUTTON);
        assert_eq!(read(&mut h.pm, GED_EVENTS), 0, "reading clears the event");
    }

    #[test]
    fn status_reads_zero_and_undecoded_reads_all_ones() {
        let mut h = harness();
        assert_eq!(read(&mut h.pm, SLEEP_STATUS), 0);
        let mut wide = [0u8; 4];
        h.pm.read(SLEEP_STATUS, &mut wide);
        assert_eq!(wide, [0xff; 4]);
        assert_eq!(read(&mut h.pm, 3), 0xff);
        assert_eq!(read(&mut h.pm, u64::MAX), 0xff);
    }

    #[test]
    fn acpi_pm_state_round_trips_and_resignals_pending_event() {
        let mut source = harness();
        source.pm.press_power_button().unwrap();
        let saved = source.pm.save();
        let json = serde_json::to_string(&saved).unwrap();
        let loaded: AcpiPmState = serde_json::from_str(&json).unwrap();
        let mut target = harness();

        target.pm.restore(&loaded).unwrap();

        assert_eq!(target.pm.save(), saved);
        assert!(target.irq.read().is_ok());
        assert_eq!(read(&mut target.pm, GED_EVENTS), EVENT_POWER_BUTTON);
    }

    #[test]
    fn acpi_pm_unknown_event_bits_are_refused() {
        let mut target = harness();

        let err = target
            .pm
            .restore(&AcpiPmState { pending: 0x82 })
            .unwrap_err();

        assert!(
            matches!(err, RestoreError::AcpiEvents { events: 0x82, .. }),
            "{err}"
        );
        assert_eq!(target.pm.save(), AcpiPmState { pending: 0 });
    }
}
