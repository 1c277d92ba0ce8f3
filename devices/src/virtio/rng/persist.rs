//! Saving and restoring an [`Rng`] device (a child of `device` to reach its fields).

use serde::{Deserialize, Serialize};

use super::Rng;
use crate::snapshot::{QueueSnapshot, RestoreError};
use crate::virtio::persist::check_common;
use crate::virtio::{device_type, ActivateParams, VirtioDevice, VirtioDeviceState};

/// A virtio-rng device's state: its queue and features only. The rate limiter's
/// buckets are not saved: a restored device starts with them full.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The live queue while activated; empty otherwise.
    pub queues: Vec<QueueSnapshot>,
    /// Features the driver accepted.
    pub acked_features: u64,
}

impl Rng {
    pub(super) fn save_state(&self) -> RngState {
        RngState {
            queues: self
                .active
                .iter()
                .map(|active| QueueSnapshot::of(&active.queue))
                .collect(),
            acked_features: self.acked_features,
        }
    }

    pub(super) fn restore_state(
        &mut self,
        state: &VirtioDeviceState,
        activate: Option<ActivateParams>,
    ) -> Result<(), RestoreError> {
        let VirtioDeviceState::Rng(state) = state else {
            return Err(state.wrong_type(device_type::RNG));
        };
        check_common(
            state.acked_features,
            self.avail_features(),
            &state.queues,
            activate.is_some(),
        )?;
        match activate {
            Some(params) => self.activate(params).map_err(RestoreError::Activate),
            None => {
                self.active = None;
                self.acked_features = state.acked_features;
                Ok(())
            }
        }
    }
}
