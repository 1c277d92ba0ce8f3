//! Saving and restoring a [`Block`] device (a child of `device` to reach its fields).

use serde::{Deserialize, Serialize};

use super::Block;
use crate::snapshot::{access_mode, QueueSnapshot, RestoreError};
use crate::virtio::persist::check_common;
use crate::virtio::{device_type, ActivateParams, VirtioDevice, VirtioDeviceState};

/// A virtio-blk device's state. The rate limiter's buckets are not saved: a
/// restored device starts with them full. The disk's contents are the disk's
/// business: restore needs the same disk, and checks its size and mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockState {
    /// The live queue while activated; empty otherwise.
    pub queues: Vec<QueueSnapshot>,
    /// Features the driver accepted.
    pub acked_features: u64,
    /// Disk capacity in 512-byte sectors.
    pub num_sectors: u64,
    /// Whether the disk is read-only.
    pub read_only: bool,
    /// The device's part of ConfigGeneration.
    pub config_generation: u32,
}

impl Block {
    pub(super) fn save_state(&self) -> BlockState {
        BlockState {
            queues: self
                .active
                .iter()
                .map(|active| QueueSnapshot::of(&active.queue))
                .collect(),
            acked_features: self.acked_features,
            num_sectors: self.disk.num_sectors,
            read_only: self.disk.read_only,
            config_generation: self.config_generation,
        }
    }

    pub(super) fn restore_state(
        &mut self,
        state: &VirtioDeviceState,
        activate: Option<ActivateParams>,
    ) -> Result<(), RestoreError> {
        let VirtioDeviceState::Block(state) = state else {
            return Err(state.wrong_type(device_type::BLOCK));
        };
        if state.num_sectors != self.disk.num_sectors {
            return Err(RestoreError::DiskSize {
                path: self.disk.path.clone(),
                here: self.disk.num_sectors,
                snapshot: state.num_sectors,
            });
        }
        if state.read_only != self.disk.read_only {
            return Err(RestoreError::DiskReadOnly {
                path: self.disk.path.clone(),
                here: access_mode(self.disk.read_only),
                snapshot: access_mode(state.read_only),
            });
        }
        check_common(
            state.acked_features,
            self.avail_features,
            &state.queues,
            activate.is_some(),
        )?;
        match activate {
            Some(params) => self.activate(params).map_err(RestoreError::Activate)?,
            None => {
                self.active = None;
                self.acked_features = state.acked_features;
            }
        }
        self.config_generation = state.config_generation;
        Ok(())
    }
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
