//! Saving and restoring a [`MmioTransport`] with its device (a child of `mmio` to
//! reach its fields).

use log::Level;
use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK, VIRTIO_CONFIG_S_FAILED as FAILED,
    VIRTIO_CONFIG_S_NEEDS_RESET as NEEDS_RESET,
};
use virtio_queue::{Queue, QueueT};

use super::{lock, MmioTransport, QueueConfig, INIT_SEQUENCE};
use crate::ratelimit::log_ratelimited;
use crate::snapshot::{activate_params, QueueSnapshot, RestoreError};
use crate::virtio::persist::{activation_mismatch, device_name};
use crate::virtio::{VirtioDeviceState, VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};

/// The interrupt causes the transport ever sets.
const KNOWN_INTERRUPTS: u32 = VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG;

/// A virtio-mmio transport's registers and its device's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmioState {
    /// The Status register as the transport holds it (NEEDS_RESET included when
    /// activation failed).
    pub status: u32,
    /// QueueSel.
    pub queue_sel: u32,
    /// DeviceFeaturesSel.
    pub device_features_sel: u32,
    /// DriverFeaturesSel.
    pub driver_features_sel: u32,
    /// The features the driver accepted.
    pub acked_features: u64,
    /// The transport's part of ConfigGeneration.
    pub config_generation: u32,
    /// Whether the device runs (DRIVER_OK accepted, no reset since).
    pub activated: bool,
    /// InterruptStatus (VIRTIO_MMIO_INT_* bits).
    pub interrupt_status: u32,
    /// The device marked itself failed ([`crate::virtio::IrqTrigger::fail`]).
    pub needs_reset: bool,
    /// What the driver wrote to the Queue* registers, per queue.
    pub queue_configs: Vec<QueueConfig>,
    /// The transport's own copies of the queues (their validated configuration).
    pub queues: Vec<QueueSnapshot>,
    /// The device's own state, with its live queues.
    pub device: VirtioDeviceState,
}

impl MmioTransport {
    /// The transport's registers and the device's state, for a snapshot taken with
    /// the vCPUs paused.
    pub fn save(&self) -> MmioState {
        MmioState {
            status: self.status,
            queue_sel: self.queue_sel,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            acked_features: self.acked_features,
            config_generation: self.config_generation,
            activated: self.activated,
            interrupt_status: self.irq.status(),
            needs_reset: self.irq.needs_reset(),
            queue_configs: self.queue_configs.clone(),
            queues: self.queues.iter().map(QueueSnapshot::of).collect(),
            device: lock(&self.device).save(),
        }
    }

    /// Puts back `state` into this freshly created transport (the driver has not
    /// touched it) and its device, which is started on its saved queues if it was
    /// running. Everything is checked before anything changes: the device kind,
    /// the queues (count, maximum sizes, sizes, rings inside guest memory), the
    /// features (only offered ones), the status (one a driver can reach). A pending
    /// interrupt is signalled again: a lost one would hang the driver, a spurious
    /// one is harmless.
    pub fn restore(&mut self, state: &MmioState) -> Result<(), RestoreError> {
        if self.activated || self.status != 0 {
            return Err(RestoreError::TransportInUse {
                status: self.status,
            });
        }
        if state.device.device_type() != self.device_type {
            return Err(state.device.wrong_type(self.device_type));
        }
        let queues = self.checked_queues(state)?;
        let offered = lock(&self.device).avail_features();
        if state.acked_features & !offered != 0 {
            return Err(RestoreError::FeaturesNotOffered {
                acked: state.acked_features,
                offered,
            });
        }
        if !is_reachable_status(state.status) || state.activated && state.status & DRIVER_OK == 0 {
            return Err(RestoreError::Status {
                status: state.status,
            });
        }
        if state.interrupt_status & !KNOWN_INTERRUPTS != 0 {
            return Err(RestoreError::InterruptStatus {
                status: state.interrupt_status,
                known: KNOWN_INTERRUPTS,
            });
        }
        let params = if state.activated {
            if state.device.acked_features() != state.acked_features {
                return Err(RestoreError::FeaturesMismatch {
                    transport: state.acked_features,
                    device: state.device.acked_features(),
                });
            }
            if state.device.queues().is_empty() {
                return Err(activation_mismatch(false, true));
            }
            self.check_max_sizes(state.device.queues())?;
            Some(activate_params(&state.device, &self.mem, self.irq.clone())?)
        } else if !state.device.queues().is_empty() {
            return Err(activation_mismatch(true, false));
        } else {
            None
        };
        lock(&self.device).restore(&state.device, params)?;

        self.queues = queues;
        self.queue_configs.clone_from(&state.queue_configs);
        self.queue_sel = state.queue_sel;
        self.status = state.status;
        self.device_features_sel = state.device_features_sel;
        self.driver_features_sel = state.driver_features_sel;
        self.acked_features = state.acked_features;
        self.config_generation = state.config_generation;
        self.activated = state.activated;
        // Added to what the device may have raised on starting (a fresh transport
        // has nothing pending otherwise): its interrupt must not be lost either.
        if state.needs_reset {
            self.irq.set_needs_reset(true);
        }
        if state.interrupt_status != 0 {
            if let Err(e) = self.irq.trigger(state.interrupt_status) {
                log_ratelimited!(
                    Level::Error,
                    "virtio-mmio {} device: cannot signal the restored interrupt: {e}",
                    device_name(self.device_type)
                );
            }
        }
        Ok(())
    }

    /// The transport's queues from `state`, checked against this device and guest
    /// memory.
    fn checked_queues(&self, state: &MmioState) -> Result<Vec<Queue>, RestoreError> {
        let here = self.queues.len();
        for snapshot in [state.queues.len(), state.queue_configs.len()] {
            if snapshot != here {
                return Err(RestoreError::QueueCount {
                    device: device_name(self.device_type),
                    snapshot,
                    here,
                });
            }
        }
        self.check_max_sizes(&state.queues)?;
        state
            .queues
            .iter()
            .enumerate()
            .map(|(index, snapshot)| snapshot.to_queue(&self.mem).map_err(|e| e.in_queue(index)))
            .collect()
    }

    /// Checks that `queues` are as many as this device's and have the same
    /// maximum sizes.
    fn check_max_sizes(&self, queues: &[QueueSnapshot]) -> Result<(), RestoreError> {
        if queues.len() != self.queues.len() {
            return Err(RestoreError::QueueCount {
                device: device_name(self.device_type),
                snapshot: queues.len(),
                here: self.queues.len(),
            });
        }
        for (index, (snapshot, here)) in queues.iter().zip(&self.queues).enumerate() {
            if snapshot.max_size != here.max_size() {
                return Err(RestoreError::QueueMaxSize {
                    index,
                    snapshot: snapshot.max_size,
                    here: here.max_size(),
                });
            }
        }
        Ok(())
    }
}

/// Whether a driver can bring the Status register to `status`: the
/// initialization bits in order, maybe FAILED, maybe NEEDS_RESET.
fn is_reachable_status(status: u32) -> bool {
    let init = status & !(FAILED | NEEDS_RESET);
    let mut done = 0;
    INIT_SEQUENCE.iter().any(|&bit| {
        let reached = init == done;
        done |= bit;
        reached
    }) || init == done
}

#[cfg(test)]
#[path = "mmio_persist_tests.rs"]
mod tests;
