//! Saving and restoring a [`Vsock`] device (a child of `device` to reach its fields).
//!
//! Connections are not saved: their host streams belong to this process. A device
//! restored running tells the driver with a transport reset event, after which the
//! guest drops its old connections.

use serde::{Deserialize, Serialize};

use super::Vsock;
use crate::snapshot::{QueueSnapshot, RestoreError};
use crate::virtio::persist::check_common;
use crate::virtio::{device_type, ActivateError, ActivateParams, VirtioDevice, VirtioDeviceState};

/// A virtio-vsock device's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockState {
    /// The guest's CID (the restoring device must have the same).
    pub guest_cid: u64,
    /// Features the driver accepted.
    pub acked_features: u64,
    /// The rx, tx and event queues while activated; empty otherwise.
    pub queues: Vec<QueueSnapshot>,
}

impl Vsock {
    pub(super) fn save_state(&self) -> VsockState {
        VsockState {
            guest_cid: self.guest_cid(),
            acked_features: self.acked_features,
            queues: self
                .active
                .iter()
                .flat_map(|active| active.queues.iter().map(QueueSnapshot::of))
                .collect(),
        }
    }

    pub(super) fn restore_state(
        &mut self,
        state: &VirtioDeviceState,
        activate: Option<ActivateParams>,
    ) -> Result<(), RestoreError> {
        let VirtioDeviceState::Vsock(state) = state else {
            return Err(state.wrong_type(device_type::VSOCK));
        };
        check_common(
            state.acked_features,
            self.avail_features(),
            &state.queues,
            activate.is_some(),
        )?;
        if state.guest_cid != self.guest_cid() {
            return Err(RestoreError::Activate(ActivateError::Device(format!(
                "the snapshot's vsock guest CID {} differs from this device's {}; configure \
                 the same guest_cid",
                state.guest_cid,
                self.guest_cid()
            ))));
        }
        match activate {
            Some(params) => {
                self.activate(params).map_err(RestoreError::Activate)?;
                self.reset_event_pending = true;
                self.process_queue(super::super::EVENT_QUEUE);
                Ok(())
            }
            None => {
                self.reset();
                self.acked_features = state.acked_features;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
