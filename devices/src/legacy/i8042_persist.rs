//! Saving and restoring the [`I8042`] controller (a child of `i8042` to reach its
//! fields).

use log::Level;
use serde::{Deserialize, Serialize};

use super::{
    CMD_WRITE_AUX_DEVICE, CMD_WRITE_AUX_OUTPUT, CMD_WRITE_CTR, CMD_WRITE_KBD_OUTPUT,
    CMD_WRITE_OUTPUT_PORT, I8042, KBD_BUFFER_LEN, KBD_SCAN_CODE_SET, KBD_SET_LEDS,
    KBD_SET_TYPEMATIC,
};
use crate::ratelimit::log_ratelimited;
use crate::snapshot::RestoreError;

/// Controller commands that wait for a parameter on the data port.
const PARAMETER_COMMANDS: [u8; 5] = [
    CMD_WRITE_CTR,
    CMD_WRITE_OUTPUT_PORT,
    CMD_WRITE_KBD_OUTPUT,
    CMD_WRITE_AUX_OUTPUT,
    CMD_WRITE_AUX_DEVICE,
];
/// Keyboard commands that wait for a parameter.
const KBD_PARAMETER_COMMANDS: [u8; 3] = [KBD_SET_LEDS, KBD_SCAN_CODE_SET, KBD_SET_TYPEMATIC];

/// The i8042 controller's and keyboard's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct I8042State {
    /// Controller command byte.
    pub ctr: u8,
    /// Whether the last write went to the command port.
    pub last_was_command: bool,
    /// Controller command waiting for its parameter.
    pub pending_command: Option<u8>,
    /// Keyboard command waiting for its parameter.
    pub pending_kbd_command: Option<u8>,
    /// The controller's unread reply.
    pub reply: Option<u8>,
    /// Keyboard bytes not read yet, oldest first (at most 16).
    pub kbd_output: Vec<u8>,
    /// Last byte read from the data port.
    pub last_read: u8,
}

impl I8042 {
    /// The controller's state, for a snapshot.
    pub fn save(&self) -> I8042State {
        I8042State {
            ctr: self.ctr,
            last_was_command: self.last_was_command,
            pending_command: self.pending_command,
            pending_kbd_command: self.pending_kbd_command,
            reply: self.reply,
            kbd_output: self.kbd_output.iter().copied().collect(),
            last_read: self.last_read,
        }
    }

    /// Puts back a saved controller state, refusing a keyboard buffer longer than
    /// the controller's or a pending command that never waits for a parameter.
    /// Raises the keyboard interrupt again if a byte is waiting for the guest.
    pub fn restore(&mut self, state: &I8042State) -> Result<(), RestoreError> {
        if state.kbd_output.len() > KBD_BUFFER_LEN {
            return Err(RestoreError::BufferTooLong {
                what: "i8042 keyboard buffer",
                len: state.kbd_output.len(),
                capacity: KBD_BUFFER_LEN,
            });
        }
        if let Some(value) = state
            .pending_command
            .filter(|c| !PARAMETER_COMMANDS.contains(c))
        {
            return Err(RestoreError::I8042Value {
                what: "pending command",
                value,
            });
        }
        if let Some(value) = state
            .pending_kbd_command
            .filter(|c| !KBD_PARAMETER_COMMANDS.contains(c))
        {
            return Err(RestoreError::I8042Value {
                what: "pending keyboard command",
                value,
            });
        }
        self.ctr = state.ctr;
        self.last_was_command = state.last_was_command;
        self.pending_command = state.pending_command;
        self.pending_kbd_command = state.pending_kbd_command;
        self.reply = state.reply;
        self.kbd_output.clear();
        self.kbd_output.extend(&state.kbd_output);
        self.last_read = state.last_read;
        if let Err(e) = self.raise_kbd_interrupt() {
            log_ratelimited!(
                Level::Warn,
                "i8042 keyboard interrupt not raised on restore: {e}"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::super::super::MachineStop;
    use super::*;

    fn i8042() -> (I8042, EventFd) {
        let reset = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let stop = MachineStop::new(reset, Default::default());
        (I8042::new(stop, irq.try_clone().unwrap()).unwrap(), irq)
    }

    #[test]
    fn i8042_state_round_trips_through_json() {
        let (mut source, _irq) = i8042();
        source.trigger_ctrl_alt_del().unwrap();
        crate::bus::BusDevice::write(&mut source, 4, &[CMD_WRITE_CTR]);
        let saved = source.save();
        let json = serde_json::to_string(&saved).unwrap();
        let loaded: I8042State = serde_json::from_str(&json).unwrap();

        let (mut target, irq) = i8042();
        target.restore(&loaded).unwrap();

        assert_eq!(target.save(), saved);
        assert!(irq.read().is_ok(), "queued keys raise the interrupt again");
    }

    #[test]
    fn i8042_oversized_keyboard_buffer_is_refused() {
        let (mut target, _irq) = i8042();
        let state = I8042State {
            kbd_output: vec![0; KBD_BUFFER_LEN + 1],
            ..target.save()
        };

        let err = target.restore(&state).unwrap_err();

        assert!(
            matches!(
                err,
                RestoreError::BufferTooLong {
                    len: 17,
                    capacity: 16,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn i8042_unknown_pending_command_is_refused() {
        let (mut target, _irq) = i8042();
        let before = target.save();
        let state = I8042State {
            pending_command: Some(0x20),
            ..before.clone()
        };

        assert!(matches!(
            target.restore(&state),
            Err(RestoreError::I8042Value { value: 0x20, .. })
        ));
        let state = I8042State {
            pending_kbd_command: Some(0xff),
            ..before.clone()
        };
        assert!(target.restore(&state).is_err());
        assert_eq!(target.save(), before);
    }
}
