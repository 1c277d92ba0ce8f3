//! The saved state of any virtio device, as one enum the transport carries.

use serde::{Deserialize, Serialize};

use super::block::BlockState;
use super::console::ConsoleState;
use super::device_type;
use super::net::NetState;
use super::rng::RngState;
use super::vsock::VsockState;
use crate::snapshot::{QueueSnapshot, RestoreError};

/// A virtio device's own state ([`super::VirtioDevice::save`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VirtioDeviceState {
    /// A virtio-blk device.
    Block(BlockState),
    /// A virtio-net device.
    Net(NetState),
    /// A virtio-console device.
    Console(ConsoleState),
    /// A virtio-rng device.
    Rng(RngState),
    /// A virtio-vsock device.
    Vsock(VsockState),
}

impl VirtioDeviceState {
    /// The virtio device id of the device this state was saved from.
    pub fn device_type(&self) -> u32 {
        match self {
            VirtioDeviceState::Block(_) => device_type::BLOCK,
            VirtioDeviceState::Net(_) => device_type::NET,
            VirtioDeviceState::Console(_) => device_type::CONSOLE,
            VirtioDeviceState::Rng(_) => device_type::RNG,
            VirtioDeviceState::Vsock(_) => device_type::VSOCK,
        }
    }

    /// The device's live queues (empty when it was not activated).
    pub fn queues(&self) -> &[QueueSnapshot] {
        match self {
            VirtioDeviceState::Block(state) => &state.queues,
            VirtioDeviceState::Net(state) => &state.queues,
            VirtioDeviceState::Console(state) => &state.queues,
            VirtioDeviceState::Rng(state) => &state.queues,
            VirtioDeviceState::Vsock(state) => &state.queues,
        }
    }

    /// The features the driver accepted, as the device saw them.
    pub fn acked_features(&self) -> u64 {
        match self {
            VirtioDeviceState::Block(state) => state.acked_features,
            VirtioDeviceState::Net(state) => state.acked_features,
            VirtioDeviceState::Console(state) => state.acked_features,
            VirtioDeviceState::Rng(state) => state.acked_features,
            VirtioDeviceState::Vsock(state) => state.acked_features,
        }
    }

    /// A refusal naming this state's kind and `here`'s.
    pub(crate) fn wrong_type(&self, here: u32) -> RestoreError {
        RestoreError::DeviceType {
            snapshot: device_name(self.device_type()),
            here: device_name(here),
        }
    }
}

/// A readable name for a virtio device id.
pub fn device_name(device_type: u32) -> &'static str {
    match device_type {
        device_type::BLOCK => "block",
        device_type::NET => "net",
        device_type::CONSOLE => "console",
        device_type::RNG => "rng",
        device_type::VSOCK => "vsock",
        _ => "unknown",
    }
}

/// Checks what every device's restore checks first: that the driver accepted only
/// `offered` features, and that the live queues are there exactly when the
/// transport activates the device.
pub(crate) fn check_common(
    acked: u64,
    offered: u64,
    queues: &[QueueSnapshot],
    activating: bool,
) -> Result<(), RestoreError> {
    if acked & !offered != 0 {
        return Err(RestoreError::FeaturesNotOffered { acked, offered });
    }
    if activating == queues.is_empty() {
        return Err(activation_mismatch(!queues.is_empty(), activating));
    }
    Ok(())
}

/// The refusal of a state whose live queues (`has_queues`) disagree with
/// `activated`.
pub(crate) fn activation_mismatch(has_queues: bool, activated: bool) -> RestoreError {
    RestoreError::ActivationMismatch {
        queues: if has_queues { "has" } else { "has no" },
        activated: if activated {
            "activated"
        } else {
            "not activated"
        },
    }
}
