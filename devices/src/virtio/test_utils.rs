//! Shared mocks for the virtio unit tests.

use std::os::fd::RawFd;

use crate::GuestMemoryMmap;
use vm_memory::GuestAddress;

use super::rng::RngState;
use super::{ActivateError, ActivateParams, VirtioDevice, VirtioDeviceState, VIRTIO_F_VERSION_1};
use crate::snapshot::{QueueSnapshot, RestoreError};

/// Device id the dummy device reports (not a real virtio device type).
pub(crate) const DUMMY_DEVICE_TYPE: u32 = 0x2a;
/// Maximum sizes of the dummy device's two queues.
pub(crate) const DUMMY_QUEUE_MAX_SIZES: [u16; 2] = [16, 32];
/// A device-specific feature the dummy device offers (bit 0).
pub(crate) const DUMMY_FEATURE: u64 = 1 << 0;
/// Size of the dummy device's configuration space.
pub(crate) const DUMMY_CONFIG_SIZE: usize = 16;

/// Guest memory of `size` bytes at guest address 0.
pub(crate) fn guest_memory(size: usize) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).expect("test guest memory")
}

/// A [`VirtioDevice`] that does nothing but record what the transport asked of it.
#[derive(Debug)]
pub(crate) struct DummyDevice {
    pub queue_max_sizes: Vec<u16>,
    pub avail_features: u64,
    /// Configuration space; byte `i` starts as `i`.
    pub config: Vec<u8>,
    /// Make [`VirtioDevice::activate`] fail.
    pub fail_activation: bool,
    /// The parameters of the last successful activation.
    pub activation: Option<ActivateParams>,
    pub activate_calls: usize,
    pub reset_calls: usize,
    /// Queue indexes passed to [`VirtioDevice::process_queue`], in order.
    pub processed: Vec<usize>,
    /// Every configuration write as (offset, data).
    pub config_writes: Vec<(u64, Vec<u8>)>,
    /// What [`VirtioDevice::config_generation`] reports.
    pub config_generation: u32,
}

impl Default for DummyDevice {
    fn default() -> Self {
        DummyDevice {
            queue_max_sizes: DUMMY_QUEUE_MAX_SIZES.to_vec(),
            avail_features: VIRTIO_F_VERSION_1 | DUMMY_FEATURE,
            config: (0..DUMMY_CONFIG_SIZE)
                .map(|i| u8::try_from(i).unwrap_or(u8::MAX))
                .collect(),
            fail_activation: false,
            activation: None,
            activate_calls: 0,
            reset_calls: 0,
            processed: Vec::new(),
            config_writes: Vec::new(),
            config_generation: 0,
        }
    }
}

impl VirtioDevice for DummyDevice {
    fn device_type(&self) -> u32 {
        DUMMY_DEVICE_TYPE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_max_sizes
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = usize::try_from(offset)
                .ok()
                .and_then(|offset| offset.checked_add(i))
                .and_then(|index| self.config.get(index))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.config_writes.push((offset, data.to_vec()));
    }

    fn config_generation(&self) -> u32 {
        self.config_generation
    }

    fn activate(&mut self, params: ActivateParams) -> Result<(), ActivateError> {
        self.activate_calls += 1;
        if self.fail_activation {
            return Err(ActivateError::Device("dummy refuses".to_string()));
        }
        self.activation = Some(params);
        Ok(())
    }

    fn reset(&mut self) {
        self.reset_calls += 1;
        self.activation = None;
    }

    fn process_queue(&mut self, index: usize) {
        self.processed.push(index);
    }

    fn event_fds(&self) -> Vec<(RawFd, u32)> {
        Vec::new()
    }

    /// The dummy has no state kind of its own: it saves as an rng state (which its
    /// device type does not match, so a transport refuses to restore it).
    fn save(&self) -> VirtioDeviceState {
        VirtioDeviceState::Rng(RngState {
            queues: self
                .activation
                .iter()
                .flat_map(|params| params.queues.iter().map(QueueSnapshot::of))
                .collect(),
            acked_features: self.activation.as_ref().map_or(0, |p| p.acked_features),
        })
    }

    fn restore(
        &mut self,
        _state: &VirtioDeviceState,
        activate: Option<ActivateParams>,
    ) -> Result<(), RestoreError> {
        if let Some(params) = activate {
            self.activate(params).map_err(RestoreError::Activate)?;
        }
        Ok(())
    }
}

/// Whether `fd` becomes readable within `timeout_ms`.
pub(crate) fn readable_within(fd: RawFd, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd that lives across the call, and the count
    // passed is 1; poll writes only its `revents`.
    let ret = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    ret == 1 && pfd.revents & libc::POLLIN != 0
}
