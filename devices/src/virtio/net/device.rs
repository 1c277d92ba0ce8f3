//! The virtio-net device: the TAP, the config space and both queues.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use log::{debug, warn, Level};
use virtio_queue::{Queue, QueueT};

use super::host::{Active, Host};
use super::metrics::NetMetrics;
use super::tap::{offload, probe_offloads, Backend, ReadGate, Tap};
use super::{
    features, Error, CONFIG_MAC_OFFSET, CONFIG_MTU_OFFSET, CONFIG_SPACE_SIZE, CONFIG_STATUS_OFFSET,
    MAC_LEN, MAX_BUFFER_LEN, MIN_MTU, NUM_QUEUES, QUEUE_MAX_SIZE, RX_QUEUE,
    RX_RATE_LIMITER_EVENT_TOKEN, TAP_EVENT_TOKEN, TX_QUEUE, TX_RATE_LIMITER_EVENT_TOKEN,
    VIRTIO_NET_S_LINK_UP,
};
use crate::rate_limiter::{RateLimiter, RateLimiterConfig};
use crate::ratelimit::log_ratelimited;
use crate::snapshot::RestoreError;
use crate::virtio::{
    add_to_counter, device_type, ActivateError, ActivateParams, VirtioDevice, VirtioDeviceState,
    VIRTIO_F_VERSION_1,
};

/// Queue sizes reported to the transport, one per queue.
const QUEUE_MAX_SIZES: [u16; NUM_QUEUES] = [QUEUE_MAX_SIZE; NUM_QUEUES];
/// First byte of a default MAC: locally administered (bit 1), unicast (bit 0 clear).
const DEFAULT_MAC_PREFIX: u8 = 0x52;

/// How a network device is backed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetConfig {
    /// Name of an existing TAP device (`ip tuntap add dev NAME mode tap`).
    pub tap: String,
    /// The guest's MAC address; by default one derived from the TAP name.
    pub mac: Option<[u8; MAC_LEN]>,
    /// MTU advertised to the guest (VIRTIO_NET_F_MTU), [`MIN_MTU`]..=65535; by
    /// default none is advertised and the driver uses 1500.
    pub mtu: Option<u16>,
    /// Limits on frames to the guest; `None` for no limit.
    pub rx_rate_limiter: Option<RateLimiterConfig>,
    /// Limits on frames from the guest; `None` for no limit.
    pub tx_rate_limiter: Option<RateLimiterConfig>,
}

/// Frame counters since the device was created, a snapshot of [`NetMetrics`] plus
/// the malformed-chain counts. Byte counts exclude the virtio-net header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Bytes delivered to the guest.
    pub rx_bytes: u64,
    /// Frames from the TAP the guest never got: too big for its receive buffer,
    /// shorter than a header, or pending when the device was reset or the TAP failed.
    pub rx_dropped: u64,
    /// Receive chains returned unused because they were malformed (a device-readable
    /// descriptor, too many descriptors, outside guest memory).
    pub rx_malformed: u64,
    /// Frames written to the TAP.
    pub tx_frames: u64,
    /// Bytes written to the TAP.
    pub tx_bytes: u64,
    /// Well-formed frames the TAP did not take (link down, write error, TAP gone).
    pub tx_dropped: u64,
    /// Transmit chains dropped because they were malformed (no frame after the header,
    /// too long, a device-writable descriptor, outside guest memory).
    pub tx_malformed: u64,
}

/// A virtio-net device on a TAP.
pub struct Net {
    host: Host,
    mac: [u8; MAC_LEN],
    avail_features: u64,
    acked_features: u64,
    /// The MTU advertised with VIRTIO_NET_F_MTU.
    mtu: Option<u16>,
    active: Option<Active>,
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Net")
            .field("label", &self.host.label)
            .field("mac", &format_mac(&self.mac))
            .field(
                "acked_features",
                &format_args!("{:#x}", self.acked_features),
            )
            .field("active", &self.active.is_some())
            .field("gone", &self.host.gone)
            .field("pending", &self.host.pending)
            .field("mtu", &self.mtu)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Net {
    /// Attaches to the existing TAP `config.tap` (TUNSETIFF with IFF_TAP, IFF_NO_PI
    /// and IFF_VNET_HDR, a 12-byte vnet header, nonblocking) and probes which offloads
    /// it supports. `index` numbers the device in messages. Creates the rate
    /// limiters' timerfds.
    pub fn new(config: &NetConfig, index: usize) -> Result<Net, Error> {
        if let Some(mtu) = config.mtu.filter(|&mtu| mtu < MIN_MTU) {
            return Err(Error::InvalidMtu {
                tap: config.tap.clone(),
                mtu,
            });
        }
        let mac = match config.mac {
            Some(mac) if is_unicast(&mac) => mac,
            Some(mac) => {
                return Err(Error::InvalidMac {
                    tap: config.tap.clone(),
                    mac: format_mac(&mac),
                })
            }
            None => default_mac(&config.tap),
        };
        let mut tap = Tap::open(&config.tap)?;
        let offloads = probe_offloads(&mut tap);
        let mut net = Net::with_backend(Box::new(tap), offloads, mac, index).map_err(|source| {
            Error::Setup {
                tap: config.tap.clone(),
                call: "epoll_create1 or timerfd_create",
                source,
            }
        })?;
        net.set_mtu(config.mtu);
        net.update_rate_limiters(config.rx_rate_limiter, config.tx_rate_limiter);
        Ok(net)
    }

    /// Advertises `mtu` (checked by [`Net::new`]) with VIRTIO_NET_F_MTU.
    pub(crate) fn set_mtu(&mut self, mtu: Option<u16>) {
        self.mtu = mtu;
        if mtu.is_some() {
            self.avail_features |= features::MTU;
        } else {
            self.avail_features &= !features::MTU;
        }
    }

    /// Replaces the receive and/or transmit rate limits (PATCH
    /// /network-interfaces); `None` leaves that direction as it is, and
    /// `Some(RateLimiterConfig::default())` lifts its limits. A throttled direction
    /// resumes at once under the new limits.
    pub fn update_rate_limiters(
        &mut self,
        rx: Option<RateLimiterConfig>,
        tx: Option<RateLimiterConfig>,
    ) {
        if let Some(config) = rx {
            self.host.rx_limiter.update(&config);
        }
        if let Some(config) = tx {
            self.host.tx_limiter.update(&config);
        }
    }

    /// The device's counters, shared.
    pub fn metrics(&self) -> Arc<NetMetrics> {
        Arc::clone(&self.host.metrics)
    }

    /// A device on any backend that supports `offloads` (an [`offload`] mask).
    pub(crate) fn with_backend(
        backend: Box<dyn Backend>,
        offloads: u32,
        mac: [u8; MAC_LEN],
        index: usize,
    ) -> io::Result<Net> {
        let label = format!("virtio-net{index} ({})", backend.name());
        debug!(
            "{label}: MAC {}, TAP offloads {offloads:#x}",
            format_mac(&mac)
        );
        Ok(Net {
            host: Host {
                label,
                backend,
                gate: ReadGate::new()?,
                gone: false,
                link_down_logged: false,
                rx_buf: vec![0u8; MAX_BUFFER_LEN].into_boxed_slice(),
                pending: None,
                pending_admitted: false,
                tx_buf: Vec::new(),
                guest_csum: false,
                rx_malformed: 0,
                tx_malformed: 0,
                metrics: Arc::new(NetMetrics::default()),
                rx_limiter: RateLimiter::new(&RateLimiterConfig::default())?,
                tx_limiter: RateLimiter::new(&RateLimiterConfig::default())?,
            },
            mac,
            avail_features: offered_features(offloads),
            acked_features: 0,
            mtu: None,
            active: None,
        })
    }

    /// The guest's MAC address: the configured one, or the default for the TAP.
    pub fn mac(&self) -> [u8; MAC_LEN] {
        self.mac
    }

    /// The TAP's name.
    pub fn tap_name(&self) -> &str {
        self.host.backend.name()
    }

    /// Frame counters.
    pub fn stats(&self) -> NetStats {
        let m = &self.host.metrics;
        let get = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        NetStats {
            rx_frames: get(&m.rx_packets),
            rx_bytes: get(&m.rx_bytes),
            rx_dropped: get(&m.rx_drops),
            rx_malformed: self.host.rx_malformed,
            tx_frames: get(&m.tx_packets),
            tx_bytes: get(&m.tx_bytes),
            tx_dropped: get(&m.tx_drops),
            tx_malformed: self.host.tx_malformed,
        }
    }

    /// Features the driver accepted at the last activation.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Whether the link is up (the TAP has not failed); the config space `status`.
    pub fn link_up(&self) -> bool {
        !self.host.gone
    }

    /// The configuration space: `mac`, `status`, `max_virtqueue_pairs` (0: MQ is
    /// not offered), `mtu` (0 unless advertised).
    fn config_space(&self) -> [u8; CONFIG_SPACE_SIZE] {
        let mut config = [0u8; CONFIG_SPACE_SIZE];
        config[CONFIG_MAC_OFFSET..CONFIG_MAC_OFFSET + MAC_LEN].copy_from_slice(&self.mac);
        let status = if self.link_up() {
            VIRTIO_NET_S_LINK_UP
        } else {
            0
        };
        config[CONFIG_STATUS_OFFSET..CONFIG_STATUS_OFFSET + 2]
            .copy_from_slice(&status.to_le_bytes());
        config[CONFIG_MTU_OFFSET..CONFIG_MTU_OFFSET + 2]
            .copy_from_slice(&self.mtu.unwrap_or(0).to_le_bytes());
        config
    }

    /// Tells the TAP which offloads frames for the driver may use: exactly the
    /// GUEST_* features it accepted. If the TAP refuses (it accepted them when
    /// probed), no offloads is still correct; only failing that fails activation.
    fn apply_offloads(&mut self, acked: u64) -> Result<(), ActivateError> {
        if self.host.gone {
            return Ok(());
        }
        let flags = tap_offloads(acked);
        let Err(e) = self.host.backend.set_offload(flags) else {
            return Ok(());
        };
        warn!(
            "{}: TUNSETOFFLOAD {flags:#x} failed ({e}); receiving without offloads",
            self.host.label
        );
        self.host.backend.set_offload(0).map_err(|e| {
            ActivateError::Device(format!("{}: TUNSETOFFLOAD 0 failed: {e}", self.host.label))
        })
    }
}

/// Features offered on a TAP that supports `offloads`: offloads in both directions
/// need checksum offload, so nothing is offered without [`offload::CSUM`].
fn offered_features(offloads: u32) -> u64 {
    let mut offered = VIRTIO_F_VERSION_1 | features::MAC | features::STATUS;
    if offloads & offload::CSUM == 0 {
        return offered;
    }
    offered |= features::CSUM | features::GUEST_CSUM;
    let pairs = [
        (offload::TSO4, features::HOST_TSO4 | features::GUEST_TSO4),
        (offload::TSO6, features::HOST_TSO6 | features::GUEST_TSO6),
        (offload::UFO, features::HOST_UFO | features::GUEST_UFO),
    ];
    for (flag, bits) in pairs {
        if offloads & flag != 0 {
            offered |= bits;
        }
    }
    offered
}

/// The TAP offloads matching the receive features the driver accepted. Segmentation
/// offloads need GUEST_CSUM (virtio 1.2, 5.1.3.1), and the TAP needs CSUM with them.
fn tap_offloads(acked: u64) -> u32 {
    if acked & features::GUEST_CSUM == 0 {
        return 0;
    }
    let mut flags = offload::CSUM;
    let pairs = [
        (features::GUEST_TSO4, offload::TSO4),
        (features::GUEST_TSO6, offload::TSO6),
        (features::GUEST_UFO, offload::UFO),
    ];
    for (feature, flag) in pairs {
        if acked & feature != 0 {
            flags |= flag;
        }
    }
    flags
}

/// A stable MAC for TAP `name`: the first byte 0x52 (locally administered, unicast),
/// the rest from a 64-bit FNV-1a hash of the name (fixed constants, so the address
/// survives cabin and Rust upgrades).
pub fn default_mac(name: &str) -> [u8; MAC_LEN] {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = name.bytes().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    });
    let h = hash.to_le_bytes();
    [DEFAULT_MAC_PREFIX, h[0], h[1], h[2], h[3], h[4]]
}

/// Whether `mac` can be a card's address: not multicast (bit 0 of the first byte)
/// and not all zeros.
fn is_unicast(mac: &[u8; MAC_LEN]) -> bool {
    mac[0] & 1 == 0 && mac.iter().any(|&b| b != 0)
}

/// `xx:xx:xx:xx:xx:xx`.
fn format_mac(mac: &[u8; MAC_LEN]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl VirtioDevice for Net {
    fn save(&self) -> VirtioDeviceState {
        VirtioDeviceState::Net(self.save_state())
    }

    fn restore(
        &mut self,
        state: &VirtioDeviceState,
        activate: Option<ActivateParams>,
    ) -> Result<(), RestoreError> {
        self.restore_state(state, activate)
    }

    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_MAX_SIZES
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config_space();
        crate::virtio::read_config_space(&config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // With VERSION_1 the driver must not write `mac`; nothing else is writable.
        log_ratelimited!(
            Level::Warn,
            "{}: ignoring {}-byte config write at offset {offset:#x}",
            self.host.label,
            data.len()
        );
    }

    fn activate(&mut self, params: ActivateParams) -> Result<(), ActivateError> {
        let ActivateParams {
            mem,
            queues,
            acked_features,
            irq,
        } = params;
        let [rx, tx] = <[Queue; NUM_QUEUES]>::try_from(queues).map_err(|queues| {
            ActivateError::QueueCount {
                expected: NUM_QUEUES,
                got: queues.len(),
            }
        })?;
        if !rx.ready() {
            return Err(ActivateError::QueueNotReady(RX_QUEUE));
        }
        if !tx.ready() {
            return Err(ActivateError::QueueNotReady(TX_QUEUE));
        }
        if self.active.is_some() {
            warn!(
                "{}: activated again without a reset, replacing the queues",
                self.host.label
            );
        }
        self.apply_offloads(acked_features)?;
        self.acked_features = acked_features;
        self.host.guest_csum = acked_features & features::GUEST_CSUM != 0;
        debug!(
            "{}: activated with features {acked_features:#x}",
            self.host.label
        );
        let active = self.active.insert(Active { mem, rx, tx, irq });
        // Frames may have queued up on the TAP before the driver was ready.
        self.host.process_rx(active);
        Ok(())
    }

    fn reset(&mut self) {
        if self.active.take().is_none() {
            return;
        }
        self.host.close_gate();
        if self.host.take_pending() {
            add_to_counter(&self.host.metrics.rx_drops, 1);
        }
        if !self.host.gone {
            if let Err(e) = self.host.backend.set_offload(0) {
                warn!(
                    "{}: cannot turn TAP offloads off on reset (TUNSETOFFLOAD): {e}",
                    self.host.label
                );
            }
        }
        self.acked_features = 0;
        self.host.guest_csum = false;
        debug!("{}: reset", self.host.label);
    }

    fn process_queue(&mut self, index: usize) {
        let Some(active) = self.active.as_mut() else {
            log_ratelimited!(
                Level::Debug,
                "{}: queue {index} notified while inactive, ignored",
                self.host.label
            );
            return;
        };
        match index {
            // New receive buffers: resume if a frame waits or the TAP is not watched.
            RX_QUEUE => {
                if self.host.pending.is_some() || !self.host.gate.is_open() {
                    self.host.process_rx(active);
                }
            }
            TX_QUEUE => self.host.process_tx(active),
            _ => log_ratelimited!(
                Level::Warn,
                "{}: notification for nonexistent queue {index}, ignored",
                self.host.label
            ),
        }
    }

    fn event_fds(&self) -> Vec<(RawFd, u32)> {
        vec![
            (self.host.gate.as_raw_fd(), TAP_EVENT_TOKEN),
            (
                self.host.rx_limiter.as_raw_fd(),
                RX_RATE_LIMITER_EVENT_TOKEN,
            ),
            (
                self.host.tx_limiter.as_raw_fd(),
                TX_RATE_LIMITER_EVENT_TOKEN,
            ),
        ]
    }

    fn process_event(&mut self, token: u32) {
        let limiter = match token {
            TAP_EVENT_TOKEN => None,
            RX_RATE_LIMITER_EVENT_TOKEN => Some(&mut self.host.rx_limiter),
            TX_RATE_LIMITER_EVENT_TOKEN => Some(&mut self.host.tx_limiter),
            _ => {
                log_ratelimited!(
                    Level::Warn,
                    "{}: event for unknown token {token}, ignored",
                    self.host.label
                );
                return;
            }
        };
        if let Some(limiter) = limiter {
            if !limiter.timer_expired(&self.host.label) {
                return;
            }
        }
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if token == TX_RATE_LIMITER_EVENT_TOKEN {
            self.host.process_tx(active);
        } else {
            self.host.process_rx(active);
        }
    }
}

#[path = "persist.rs"]
mod persist;
pub use persist::NetState;

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "device_limits_tests.rs"]
mod limits_tests;
