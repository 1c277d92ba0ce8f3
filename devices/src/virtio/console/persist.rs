//! Saving and restoring a [`Console`] (a child of `device` to reach its fields).

use serde::{Deserialize, Serialize};

use super::super::INPUT_BUFFER_CAPACITY;
use super::Console;
use crate::snapshot::{QueueSnapshot, RestoreError};
use crate::virtio::persist::check_common;
use crate::virtio::{device_type, ActivateParams, VirtioDevice, VirtioDeviceState};

/// A virtio-console device's state. Guest output already went to the host
/// writer; host input the device took but did not deliver yet is saved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleState {
    /// The receive and transmit queues while activated; empty otherwise.
    pub queues: Vec<QueueSnapshot>,
    /// Features the driver accepted.
    pub acked_features: u64,
    /// Host input not yet delivered, oldest first; at most
    /// [`INPUT_BUFFER_CAPACITY`] bytes.
    pub pending_input: Vec<u8>,
    /// The driver's console is open (it has transmitted since activation).
    pub listening: bool,
}

impl Console {
    pub(super) fn save_state(&self) -> ConsoleState {
        ConsoleState {
            queues: self
                .active
                .iter()
                .flat_map(|active| [QueueSnapshot::of(&active.rx), QueueSnapshot::of(&active.tx)])
                .collect(),
            acked_features: self.acked_features,
            pending_input: self.pending.iter().copied().collect(),
            listening: self.listening,
        }
    }

    pub(super) fn restore_state(
        &mut self,
        state: &VirtioDeviceState,
        activate: Option<ActivateParams>,
    ) -> Result<(), RestoreError> {
        let VirtioDeviceState::Console(state) = state else {
            return Err(state.wrong_type(device_type::CONSOLE));
        };
        if state.pending_input.len() > INPUT_BUFFER_CAPACITY {
            return Err(RestoreError::BufferTooLong {
                what: "console input",
                len: state.pending_input.len(),
                capacity: INPUT_BUFFER_CAPACITY,
            });
        }
        check_common(
            state.acked_features,
            self.avail_features(),
            &state.queues,
            activate.is_some(),
        )?;
        let pending = std::mem::replace(
            &mut self.pending,
            state.pending_input.iter().copied().collect(),
        );
        let listening = std::mem::replace(&mut self.listening, state.listening);
        match activate {
            Some(params) => {
                if let Err(e) = self.activate(params) {
                    self.pending = pending;
                    self.listening = listening;
                    return Err(RestoreError::Activate(e));
                }
            }
            None => {
                self.active = None;
                self.acked_features = state.acked_features;
            }
        }
        self.input_refused = false;
        Ok(())
    }
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
