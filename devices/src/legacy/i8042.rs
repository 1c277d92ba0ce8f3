//! i8042 keyboard controller: CPU reset, and just enough of a keyboard to
//! deliver Ctrl+Alt+Del.
//!
//! `vm_superio::I8042Device` only knows the reset command and reads every
//! register as 0, which a Linux guest's i8042 driver takes as "no controller".
//! To let the host press Ctrl+Alt+Del the guest driver must bind, so this model
//! adds the controller side a driver probes (status register, command byte,
//! self tests, a keyboard port with an output queue) and a keyboard that
//! acknowledges commands. There is no AUX (mouse) port: its loopback and
//! interface tests fail at once, so the guest gives up on it without waiting.
//!
//! The reset itself (command 0xFE, or the output-port reset line) still goes
//! through `vm_superio::I8042Device`.

use std::collections::VecDeque;
use std::fmt;

use log::Level;
use vm_superio::I8042Device;
use vmm_sys_util::eventfd::EventFd;

use super::{Error, EventFdTrigger, MachineStop};
use crate::bus::BusDevice;
use crate::ratelimit::log_ratelimited;

/// Offset of the data port (0x60): controller and keyboard output for reads,
/// command parameters and keyboard commands for writes.
const DATA_OFFSET: u64 = 0;
/// Offset of the status (read) and command (write) port (0x64).
const COMMAND_OFFSET: u64 = 4;
/// What the guest reads from offsets the device does not decode.
const UNHANDLED_READ: u8 = 0xff;

// Status register bits.
/// Output buffer full: a byte is waiting on the data port.
const STATUS_OUTPUT_FULL: u8 = 0x01;
/// System flag, mirrored from the command byte.
const STATUS_SYSTEM: u8 = 0x04;
/// The last write went to the command port (not the data port).
const STATUS_LAST_WAS_COMMAND: u8 = 0x08;
/// Keyboard not inhibited by the key lock.
const STATUS_UNLOCKED: u8 = 0x10;

// Controller command byte ("CTR") bits.
/// Raise IRQ 1 when keyboard data is available.
const CTR_KBD_INTERRUPT: u8 = 0x01;
/// System flag: the power-on self test passed.
const CTR_SYSTEM: u8 = 0x04;
/// Keyboard port disabled (clock held low): keyboard data stays queued.
const CTR_KBD_DISABLED: u8 = 0x10;
/// AUX port disabled.
const CTR_AUX_DISABLED: u8 = 0x20;
/// Translate keyboard scan code set 2 to set 1.
const CTR_TRANSLATE: u8 = 0x40;
/// Power-on command byte. Translation is off, so a Linux guest drives the
/// keyboard in raw set 2, the set the scan codes below are written in.
const CTR_DEFAULT: u8 = CTR_KBD_INTERRUPT | CTR_SYSTEM;

// Controller commands (written to the command port).
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_DISABLE_AUX: u8 = 0xa7;
const CMD_ENABLE_AUX: u8 = 0xa8;
const CMD_TEST_AUX: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_TEST_KBD: u8 = 0xab;
const CMD_DISABLE_KBD: u8 = 0xad;
const CMD_ENABLE_KBD: u8 = 0xae;
const CMD_READ_INPUT_PORT: u8 = 0xc0;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_WRITE_KBD_OUTPUT: u8 = 0xd2;
const CMD_WRITE_AUX_OUTPUT: u8 = 0xd3;
const CMD_WRITE_AUX_DEVICE: u8 = 0xd4;
/// Pulse the CPU reset line; `vm_superio::I8042Device` handles it.
const CMD_RESET_CPU: u8 = 0xfe;

// Controller replies.
const SELF_TEST_PASSED: u8 = 0x55;
const KBD_TEST_PASSED: u8 = 0x00;
/// AUX interface test result "clock line stuck low": there is no AUX port.
const AUX_TEST_NO_PORT: u8 = 0x01;
const INPUT_PORT: u8 = 0x00;
/// Output port bits: reset line released (bit 0) and A20 enabled (bit 1).
const OUTPUT_PORT: u8 = 0x03;
/// Output port bit 0: CPU reset line, active low.
const OUTPUT_PORT_RESET_RELEASED: u8 = 0x01;

// Keyboard commands (written to the data port with no controller command
// pending) and replies.
const KBD_SET_LEDS: u8 = 0xed;
const KBD_ECHO: u8 = 0xee;
const KBD_SCAN_CODE_SET: u8 = 0xf0;
const KBD_IDENTIFY: u8 = 0xf2;
const KBD_SET_TYPEMATIC: u8 = 0xf3;
const KBD_RESET: u8 = 0xff;
const KBD_ACK: u8 = 0xfa;
const KBD_SELF_TEST_PASSED: u8 = 0xaa;
/// Identity of an MF2 keyboard, without and with translation.
const KBD_ID: [u8; 2] = [0xab, 0x83];
const KBD_ID_TRANSLATED: [u8; 2] = [0xab, 0x41];
/// Reply to "get scan code set": set 2.
const KBD_CURRENT_SET: u8 = 0x02;

/// Bytes the keyboard can hold before the guest reads them; the size of a
/// real controller's buffer, and what Linux expects to flush at most.
const KBD_BUFFER_LEN: usize = 16;

/// Ctrl, Alt, Delete pressed, then released in reverse order, in scan code
/// set 2 (what the guest sees without translation).
const CTRL_ALT_DEL_SET2: [u8; 11] = [
    0x14, 0x11, 0xe0, 0x71, // make Ctrl, Alt, Delete
    0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14, // break Delete, Alt, Ctrl
];
/// The same keys in scan code set 1 (what the guest sees with translation).
const CTRL_ALT_DEL_SET1: [u8; 8] = [
    0x1d, 0x38, 0xe0, 0x53, // make Ctrl, Alt, Delete
    0xe0, 0xd3, 0xb8, 0x9d, // break Delete, Alt, Ctrl
];

/// The i8042 PS/2 controller at ports 0x60 and 0x64.
///
/// Two signals connect it to the VMM: `reset` fires when the guest resets the CPU
/// through the controller (how Linux reboots with `reboot=k`),
/// and `kbd_irq` is the edge for IRQ 1, raised once per keyboard byte that
/// becomes readable while the guest has the keyboard interrupt enabled.
pub struct I8042 {
    reset: I8042Device<MachineStop>,
    kbd_irq: EventFdTrigger,
    /// Controller command byte.
    ctr: u8,
    /// Whether the last write went to the command port.
    last_was_command: bool,
    /// Controller command waiting for its parameter on the data port.
    pending_command: Option<u8>,
    /// Keyboard command waiting for its parameter on the data port.
    pending_kbd_command: Option<u8>,
    /// The controller's reply to the last command, read before keyboard data.
    /// A new reply replaces an unread one, as on the one-byte hardware buffer.
    reply: Option<u8>,
    /// Bytes from the keyboard, oldest first, at most [`KBD_BUFFER_LEN`].
    kbd_output: VecDeque<u8>,
    /// Last byte read from the data port, returned again when nothing waits.
    last_read: u8,
}

impl fmt::Debug for I8042 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("I8042")
            .field("ctr", &self.ctr)
            .field("pending_command", &self.pending_command)
            .field("reply", &self.reply)
            .field("kbd_output", &self.kbd_output)
            .finish_non_exhaustive()
    }
}

impl I8042 {
    /// Length of the port range the device decodes, starting at port 0x60
    /// (offset 4 is port 0x64).
    pub const PORT_RANGE_LEN: u64 = 5;

    /// Creates the controller; `reset` fires on a guest CPU reset,
    /// `kbd_irq` on each keyboard interrupt (IRQ 1).
    ///
    /// Nothing can fail today; the `Result` leaves room for setup that can.
    pub fn new(reset: MachineStop, kbd_irq: EventFd) -> Result<Self, Error> {
        Ok(Self {
            reset: I8042Device::new(reset),
            kbd_irq: EventFdTrigger::new(kbd_irq),
            ctr: CTR_DEFAULT,
            last_was_command: false,
            pending_command: None,
            pending_kbd_command: None,
            reply: None,
            kbd_output: VecDeque::with_capacity(KBD_BUFFER_LEN),
            last_read: 0,
        })
    }

    /// Presses and releases Ctrl+Alt+Del on the keyboard.
    ///
    /// The whole sequence is queued or none of it is: when the guest has not
    /// drained earlier keys, this fails with [`Error::KbdBufferFull`]. If the
    /// guest has the keyboard port or its interrupt disabled, the keys wait
    /// until it enables them.
    pub fn trigger_ctrl_alt_del(&mut self) -> Result<(), Error> {
        let keys: &[u8] = if self.ctr & CTR_TRANSLATE != 0 {
            &CTRL_ALT_DEL_SET1
        } else {
            &CTRL_ALT_DEL_SET2
        };
        let free = KBD_BUFFER_LEN.saturating_sub(self.kbd_output.len());
        if keys.len() > free {
            return Err(Error::KbdBufferFull {
                needed: keys.len(),
                free,
            });
        }
        self.kbd_output.extend(keys);
        self.raise_kbd_interrupt().map_err(Error::KbdInterrupt)
    }

    /// Whether keyboard bytes are visible on the data port: the keyboard port
    /// is enabled and no controller reply is ahead of them.
    fn kbd_data_visible(&self) -> bool {
        self.reply.is_none() && self.ctr & CTR_KBD_DISABLED == 0 && !self.kbd_output.is_empty()
    }

    /// Raises IRQ 1 if a keyboard byte is readable and the guest wants the
    /// interrupt. Called whenever a keyboard byte may have become readable.
    fn raise_kbd_interrupt(&mut self) -> std::io::Result<()> {
        if self.kbd_data_visible() && self.ctr & CTR_KBD_INTERRUPT != 0 {
            vm_superio::Trigger::trigger(&self.kbd_irq)?;
        }
        Ok(())
    }

    /// Like [`Self::raise_kbd_interrupt`], for paths driven by the guest,
    /// which have nowhere to report a failure but the log.
    fn raise_kbd_interrupt_logged(&mut self) {
        if let Err(e) = self.raise_kbd_interrupt() {
            log_ratelimited!(Level::Warn, "i8042 keyboard interrupt not raised: {e}");
        }
    }

    /// Queues a byte from the keyboard, dropping it when the buffer is full.
    fn push_kbd(&mut self, byte: u8) {
        if self.kbd_output.len() >= KBD_BUFFER_LEN {
            log_ratelimited!(
                Level::Debug,
                "i8042 keyboard buffer full, dropped {byte:#04x}"
            );
            return;
        }
        self.kbd_output.push_back(byte);
    }

    fn read_status(&self) -> u8 {
        let mut status = STATUS_UNLOCKED;
        if self.ctr & CTR_SYSTEM != 0 {
            status |= STATUS_SYSTEM;
        }
        if self.reply.is_some() || self.kbd_data_visible() {
            status |= STATUS_OUTPUT_FULL;
        }
        if self.last_was_command {
            status |= STATUS_LAST_WAS_COMMAND;
        }
        status
    }

    fn read_data(&mut self) -> u8 {
        if let Some(byte) = self.reply.take() {
            self.last_read = byte;
        } else if self.kbd_data_visible() {
            if let Some(byte) = self.kbd_output.pop_front() {
                self.last_read = byte;
            }
        }
        // The interrupt is an edge per byte: announce the next one, if any.
        self.raise_kbd_interrupt_logged();
        self.last_read
    }

    fn write_command(&mut self, command: u8) {
        self.last_was_command = true;
        self.pending_command = None;
        match command {
            CMD_READ_CTR => self.reply = Some(self.ctr),
            CMD_WRITE_CTR
            | CMD_WRITE_OUTPUT_PORT
            | CMD_WRITE_KBD_OUTPUT
            | CMD_WRITE_AUX_OUTPUT
            | CMD_WRITE_AUX_DEVICE => self.pending_command = Some(command),
            CMD_DISABLE_AUX => self.ctr |= CTR_AUX_DISABLED,
            CMD_ENABLE_AUX => self.ctr &= !CTR_AUX_DISABLED,
            CMD_TEST_AUX => self.reply = Some(AUX_TEST_NO_PORT),
            CMD_SELF_TEST => self.reply = Some(SELF_TEST_PASSED),
            CMD_TEST_KBD => self.reply = Some(KBD_TEST_PASSED),
            CMD_DISABLE_KBD => self.ctr |= CTR_KBD_DISABLED,
            CMD_ENABLE_KBD => {
                self.ctr &= !CTR_KBD_DISABLED;
                self.raise_kbd_interrupt_logged();
            }
            CMD_READ_INPUT_PORT => self.reply = Some(INPUT_PORT),
            CMD_READ_OUTPUT_PORT => self.reply = Some(OUTPUT_PORT),
            CMD_RESET_CPU => self.reset_cpu(),
            _ => log_ratelimited!(
                Level::Debug,
                "i8042 command {command:#04x} not implemented, ignored"
            ),
        }
    }

    fn write_data(&mut self, value: u8) {
        self.last_was_command = false;
        match self.pending_command.take() {
            Some(CMD_WRITE_CTR) => {
                self.ctr = value;
                // Enabling the port or its interrupt releases queued keys.
                self.raise_kbd_interrupt_logged();
            }
            Some(CMD_WRITE_OUTPUT_PORT) => {
                if value & OUTPUT_PORT_RESET_RELEASED == 0 {
                    self.reset_cpu();
                }
            }
            Some(CMD_WRITE_KBD_OUTPUT) => {
                self.push_kbd(value);
                self.raise_kbd_interrupt_logged();
            }
            // Loopback without an AUX port: the byte comes back, but without
            // the AUX flag in the status register, which tells the guest the
            // port is missing.
            Some(CMD_WRITE_AUX_OUTPUT) => self.reply = Some(value),
            Some(CMD_WRITE_AUX_DEVICE) => {
                log_ratelimited!(
                    Level::Debug,
                    "i8042 byte {value:#04x} for absent AUX device"
                );
            }
            Some(other) => {
                // Only commands listed in `write_command` are ever pending.
                log_ratelimited!(
                    Level::Warn,
                    "i8042 parameter {value:#04x} for command {other:#04x} ignored"
                );
            }
            None => self.write_keyboard(value),
        }
    }

    /// A byte sent to the keyboard: a command, or the parameter of one.
    fn write_keyboard(&mut self, value: u8) {
        if let Some(command) = self.pending_kbd_command.take() {
            self.push_kbd(KBD_ACK);
            if command == KBD_SCAN_CODE_SET && value == 0 {
                self.push_kbd(KBD_CURRENT_SET);
            }
        } else {
            match value {
                KBD_SET_LEDS | KBD_SCAN_CODE_SET | KBD_SET_TYPEMATIC => {
                    self.pending_kbd_command = Some(value);
                    self.push_kbd(KBD_ACK);
                }
                KBD_ECHO => self.push_kbd(KBD_ECHO),
                KBD_IDENTIFY => {
                    let id = if self.ctr & CTR_TRANSLATE != 0 {
                        KBD_ID_TRANSLATED
                    } else {
                        KBD_ID
                    };
                    self.push_kbd(KBD_ACK);
                    id.into_iter().for_each(|byte| self.push_kbd(byte));
                }
                KBD_RESET => {
                    self.kbd_output.clear();
                    self.push_kbd(KBD_ACK);
                    self.push_kbd(KBD_SELF_TEST_PASSED);
                }
                // Enable/disable scanning, defaults, typematic modes, resend:
                // nothing to change in a keyboard nobody types on.
                _ => self.push_kbd(KBD_ACK),
            }
        }
        self.raise_kbd_interrupt_logged();
    }

    fn reset_cpu(&mut self) {
        let offset = COMMAND_OFFSET as u8;
        if let Err(e) = self.reset.write(offset, CMD_RESET_CPU) {
            log_ratelimited!(Level::Warn, "i8042 CPU reset not signalled: {e}");
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match (offset, data.len()) {
            (DATA_OFFSET, 1) => self.read_data(),
            (COMMAND_OFFSET, 1) => self.read_status(),
            _ => {
                log_ratelimited!(
                    Level::Debug,
                    "i8042 read at offset {offset:#x} of {} bytes ignored",
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
            (DATA_OFFSET, &[value]) => self.write_data(value),
            (COMMAND_OFFSET, &[value]) => self.write_command(value),
            _ => log_ratelimited!(
                Level::Debug,
                "i8042 write at offset {offset:#x} of {} bytes ignored",
                data.len()
            ),
        }
    }
}

#[path = "i8042_persist.rs"]
mod persist;
pub use persist::I8042State;

#[cfg(test)]
mod tests {
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    use super::*;

    struct Harness {
        i8042: I8042,
        reset: EventFd,
        irq: EventFd,
    }

    impl Harness {
        fn new() -> Self {
            let reset = EventFd::new(EFD_NONBLOCK).unwrap();
            let irq = EventFd::new(EFD_NONBLOCK).unwrap();
            let stop = MachineStop::new(reset.try_clone().unwrap(), Default::default());
            let i8042 = I8042::new(stop, irq.try_clone().unwrap()).unwrap();
            Self { i8042, reset, irq }
        }

        fn command(&mut self, command: u8) {
            self.i8042.write(COMMAND_OFFSET, &[command]);
        }

        fn data(&mut self, value: u8) {
            self.i8042.write(DATA_OFFSET, &[value]);
        }

        fn status(&mut self) -> u8 {
            let mut data = [0u8; 1];
            self.i8042.read(COMMAND_OFFSET, &mut data);
            data[0]
        }

        fn read_data(&mut self) -> u8 {
            let mut data = [0u8; 1];
            self.i8042.read(DATA_OFFSET, &mut data);
            data[0]
        }

        /// Reads the data port while the status says a byte is waiting, as
        /// the Linux driver does.
        fn drain(&mut self) -> Vec<u8> {
            let mut bytes = Vec::new();
            while self.status() & STATUS_OUTPUT_FULL != 0 && bytes.len() < 64 {
                bytes.push(self.read_data());
            }
            bytes
        }

        fn reset_signalled(&self) -> bool {
            self.reset.read().is_ok()
        }

        /// Number of interrupt edges since the last call.
        fn irqs(&self) -> u64 {
            self.irq.read().unwrap_or(0)
        }
    }

    #[test]
    fn i8042_reset_command_signals_reset_eventfd() {
        let mut h = Harness::new();

        h.command(CMD_RESET_CPU);

        assert!(h.reset_signalled());
    }

    #[test]
    fn i8042_other_commands_do_not_signal_reset() {
        let mut h = Harness::new();

        for command in (0..=u8::MAX).filter(|&c| c != CMD_RESET_CPU) {
            h.command(command);
            h.drain();
        }

        assert!(!h.reset_signalled());
    }

    #[test]
    fn i8042_reset_value_on_data_port_does_not_signal_reset() {
        let mut h = Harness::new();

        h.data(CMD_RESET_CPU);

        assert!(!h.reset_signalled());
    }

    #[test]
    fn i8042_output_port_reset_line_low_signals_reset() {
        let mut h = Harness::new();
        h.command(CMD_WRITE_OUTPUT_PORT);
        h.data(0xdf); // A20 on, reset line released: what boot loaders write.
        assert!(!h.reset_signalled());

        h.command(CMD_WRITE_OUTPUT_PORT);
        h.data(0xde);

        assert!(h.reset_signalled());
    }

    #[test]
    fn i8042_status_read_reports_idle_controller() {
        let mut h = Harness::new();

        let status = h.status();

        assert_eq!(status & STATUS_OUTPUT_FULL, 0);
        assert_eq!(status & STATUS_UNLOCKED, STATUS_UNLOCKED);
        assert_eq!(status & STATUS_SYSTEM, STATUS_SYSTEM);
    }

    #[test]
    fn i8042_status_tracks_last_written_port() {
        let mut h = Harness::new();
        h.command(CMD_DISABLE_AUX);
        assert_ne!(h.status() & STATUS_LAST_WAS_COMMAND, 0);
        h.command(CMD_WRITE_CTR);
        h.data(CTR_DEFAULT);
        assert_eq!(h.status() & STATUS_LAST_WAS_COMMAND, 0);
    }

    #[test]
    fn i8042_self_test_replies_passed() {
        let mut h = Harness::new();

        h.command(CMD_SELF_TEST);

        assert_eq!(h.drain(), [SELF_TEST_PASSED]);
    }

    #[test]
    fn i8042_command_byte_written_then_read_back() {
        let mut h = Harness::new();
        h.command(CMD_WRITE_CTR);
        h.data(0x65);

        h.command(CMD_READ_CTR);

        assert_eq!(h.drain(), [0x65]);
    }

    #[test]
    fn i8042_aux_loopback_reply_lacks_aux_flag() {
        let mut h = Harness::new();
        h.command(CMD_WRITE_AUX_OUTPUT);
        h.data(0x5a);

        let status = h.status();

        assert_ne!(status & STATUS_OUTPUT_FULL, 0);
        assert_eq!(status & 0x20, 0, "AUX data flag must stay clear");
        h.command(CMD_TEST_AUX);
        assert_eq!(h.drain(), [AUX_TEST_NO_PORT], "new reply replaces old");
    }

    #[test]
    fn i8042_keyboard_identify_acked_with_id_and_interrupts() {
        let mut h = Harness::new();

        h.data(KBD_IDENTIFY);

        assert_eq!(h.irqs(), 1);
        assert_eq!(h.read_data(), KBD_ACK);
        assert_eq!(h.irqs(), 1, "next byte announced after the read");
        assert_eq!(h.drain(), KBD_ID);
    }

    #[test]
    fn i8042_keyboard_command_with_parameter_acked_twice() {
        let mut h = Harness::new();

        h.data(KBD_SET_LEDS);
        h.data(0x00);

        assert_eq!(h.drain(), [KBD_ACK, KBD_ACK]);
    }

    #[test]
    fn i8042_keyboard_get_scan_code_set_replies_set_two() {
        let mut h = Harness::new();

        h.data(KBD_SCAN_CODE_SET);
        h.data(0);

        assert_eq!(h.drain(), [KBD_ACK, KBD_ACK, KBD_CURRENT_SET]);
    }

    #[test]
    fn i8042_keyboard_reset_replies_self_test_passed() {
        let mut h = Harness::new();

        h.data(KBD_RESET);

        assert_eq!(h.drain(), [KBD_ACK, KBD_SELF_TEST_PASSED]);
    }

    #[test]
    fn i8042_ctrl_alt_del_signals_kbd_irq() {
        let mut h = Harness::new();

        h.i8042.trigger_ctrl_alt_del().unwrap();

        assert_eq!(h.irqs(), 1);
        assert!(!h.reset_signalled());
    }

    #[test]
    fn i8042_ctrl_alt_del_delivers_set2_scan_codes_one_irq_each() {
        let mut h = Harness::new();
        h.i8042.trigger_ctrl_alt_del().unwrap();

        let mut bytes = Vec::new();
        let mut irqs = h.irqs();
        while h.status() & STATUS_OUTPUT_FULL != 0 {
            bytes.push(h.read_data());
            irqs += h.irqs();
        }

        assert_eq!(bytes, CTRL_ALT_DEL_SET2);
        assert_eq!(irqs, CTRL_ALT_DEL_SET2.len() as u64);
    }

    #[test]
    fn i8042_ctrl_alt_del_with_translation_delivers_set1_scan_codes() {
        let mut h = Harness::new();
        h.command(CMD_WRITE_CTR);
        h.data(CTR_DEFAULT | CTR_TRANSLATE);

        h.i8042.trigger_ctrl_alt_del().unwrap();

        assert_eq!(h.drain(), CTRL_ALT_DEL_SET1);
    }

    #[test]
    fn i8042_ctrl_alt_del_with_interrupt_disabled_waits_for_enable() {
        let mut h = Harness::new();
        h.command(CMD_WRITE_CTR);
        h.data(CTR_SYSTEM | CTR_KBD_DISABLED);

        h.i8042.trigger_ctrl_alt_del().unwrap();

        assert_eq!(h.irqs(), 0);
        assert_eq!(h.status() & STATUS_OUTPUT_FULL, 0);
        h.command(CMD_WRITE_CTR);
        h.data(CTR_SYSTEM | CTR_KBD_INTERRUPT);
        assert_eq!(h.irqs(), 1);
        assert_eq!(h.drain(), CTRL_ALT_DEL_SET2);
    }

    #[test]
    fn i8042_ctrl_alt_del_undrained_buffer_full_error() {
        let mut h = Harness::new();
        h.i8042.trigger_ctrl_alt_del().unwrap();

        let err = h.i8042.trigger_ctrl_alt_del().unwrap_err();

        assert!(matches!(
            err,
            Error::KbdBufferFull {
                needed: 11,
                free: 5
            }
        ));
        assert_eq!(h.drain(), CTRL_ALT_DEL_SET2, "no partial sequence queued");
    }

    #[test]
    fn i8042_controller_reply_read_before_keyboard_data() {
        let mut h = Harness::new();
        h.i8042.trigger_ctrl_alt_del().unwrap();

        h.command(CMD_SELF_TEST);

        assert_eq!(h.read_data(), SELF_TEST_PASSED);
        assert_eq!(h.read_data(), CTRL_ALT_DEL_SET2[0]);
    }

    #[test]
    fn i8042_keyboard_flood_bounded_without_panic() {
        let mut h = Harness::new();

        for _ in 0..1000 {
            h.data(KBD_IDENTIFY);
        }

        assert_eq!(h.drain().len(), KBD_BUFFER_LEN);
    }

    #[test]
    fn i8042_empty_data_port_repeats_last_byte() {
        let mut h = Harness::new();
        h.command(CMD_SELF_TEST);
        assert_eq!(h.read_data(), SELF_TEST_PASSED);

        assert_eq!(h.read_data(), SELF_TEST_PASSED);
    }

    #[test]
    fn i8042_undecoded_offsets_and_widths_ignored() {
        let mut h = Harness::new();

        for offset in [1, 2, 3, I8042::PORT_RANGE_LEN, 0x100, u64::MAX] {
            let mut data = [0u8; 1];
            h.i8042.read(offset, &mut data);
            assert_eq!(data, [UNHANDLED_READ], "offset {offset:#x}");
            h.i8042.write(offset, &[CMD_RESET_CPU]);
        }
        for width in [0usize, 2, 4, 8, 9] {
            let mut data = vec![0u8; width];
            h.i8042.read(COMMAND_OFFSET, &mut data);
            assert!(data.iter().all(|&b| b == UNHANDLED_READ), "width {width}");
            h.i8042.write(COMMAND_OFFSET, &vec![CMD_RESET_CPU; width]);
            h.i8042.write(DATA_OFFSET, &vec![KBD_IDENTIFY; width]);
        }

        assert!(!h.reset_signalled());
        assert!(h.drain().is_empty());
    }

    #[test]
    fn i8042_every_command_and_parameter_does_not_panic() {
        let mut h = Harness::new();
        for command in 0..=u8::MAX {
            for value in [0x00, 0x01, 0x55, 0xfe, 0xff] {
                h.command(command);
                h.data(value);
                h.data(value);
                h.drain();
            }
        }
    }
}
