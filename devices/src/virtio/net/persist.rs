//! Saving and restoring a [`Net`] device (a child of `device` to reach its fields).

use serde::{Deserialize, Serialize};

use super::super::{MAC_LEN, MIN_MTU};
use super::{format_mac, is_unicast, Net};
use crate::snapshot::{QueueSnapshot, RestoreError};
use crate::virtio::persist::check_common;
use crate::virtio::{device_type, ActivateParams, VirtioDevice, VirtioDeviceState};

/// A virtio-net device's state.
///
/// Not saved: a frame read from the TAP but not yet delivered to the guest (it is
/// dropped, as a full receive queue would drop it, and TCP resends it), and the
/// rate limiters' buckets (a restored device starts with them full). The TAP may
/// be another one on restore; the MAC address is the snapshot's, since the guest
/// already knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetState {
    /// The receive and transmit queues while activated; empty otherwise.
    pub queues: Vec<QueueSnapshot>,
    /// Features the driver accepted.
    pub acked_features: u64,
    /// The card's MAC address.
    pub mac: [u8; MAC_LEN],
    /// The advertised MTU, if any.
    pub mtu: Option<u16>,
}

impl Net {
    pub(super) fn save_state(&self) -> NetState {
        NetState {
            queues: self
                .active
                .iter()
                .flat_map(|active| [QueueSnapshot::of(&active.rx), QueueSnapshot::of(&active.tx)])
                .collect(),
            acked_features: self.acked_features,
            mac: self.mac,
            mtu: self.mtu,
        }
    }

    pub(super) fn restore_state(
        &mut self,
        state: &VirtioDeviceState,
        activate: Option<ActivateParams>,
    ) -> Result<(), RestoreError> {
        let VirtioDeviceState::Net(state) = state else {
            return Err(state.wrong_type(device_type::NET));
        };
        if !is_unicast(&state.mac) {
            return Err(RestoreError::Mac {
                mac: format_mac(&state.mac),
            });
        }
        if let Some(mtu) = state.mtu.filter(|&mtu| mtu < MIN_MTU) {
            return Err(RestoreError::Mtu { mtu, min: MIN_MTU });
        }
        let old_mtu = self.mtu;
        self.set_mtu(state.mtu);
        if let Err(e) = check_common(
            state.acked_features,
            self.avail_features(),
            &state.queues,
            activate.is_some(),
        ) {
            self.set_mtu(old_mtu);
            return Err(e);
        }
        let old_mac = std::mem::replace(&mut self.mac, state.mac);
        match activate {
            Some(params) => {
                if let Err(e) = self.activate(params) {
                    self.mac = old_mac;
                    self.set_mtu(old_mtu);
                    return Err(RestoreError::Activate(e));
                }
            }
            None => {
                // A fresh device is not active; nothing to stop.
                self.acked_features = state.acked_features;
                self.host.guest_csum = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
