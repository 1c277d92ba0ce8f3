//! virtio-net (virtio 1.2, section 5.1): an Ethernet card backed by a host TAP device.
//!
//! The device has exactly one queue pair and no control queue:
//! - queue 0, the receiveq, carries frames from the TAP to the guest in buffers the
//!   driver posts empty (device-writable descriptors);
//! - queue 1, the transmitq, carries frames from the guest to the TAP in buffers the
//!   device only reads (device-readable descriptors).
//!
//! Every frame on either queue starts with the 12-byte `virtio_net_hdr_v1` (VERSION_1
//! makes it 12 bytes whether or not MRG_RXBUF is negotiated). The TAP is opened with
//! IFF_VNET_HDR and a vnet header size of 12, so the kernel reads and writes the very
//! same header: frames go through unchanged, except that the device sets
//! `num_buffers` to 1 on receive (the kernel skips those two bytes, and the spec asks
//! for 1 without MRG_RXBUF). MRG_RXBUF is not offered, so one receive chain must hold
//! a whole frame: the header plus up to [`MAX_FRAME_LEN`] bytes when the driver
//! accepted a GUEST_TSO feature, or plus 1514 bytes otherwise (more if the TAP's MTU
//! was raised). A frame that does not fit is dropped and counted.
//!
//! Offloads (checksum, TSO, UFO) are offered only if the TAP accepts them
//! (TUNSETOFFLOAD probed when the device is created), and the TAP is told on
//! activation which of them the driver accepted for receiving.
//!
//! Receive flow control: the device reads at most one frame ahead of the guest. When
//! a frame read from the TAP finds no receive buffer it stays pending in the device
//! and the device stops watching the TAP until the driver posts buffers
//! (`process_queue(RX_QUEUE)`). The VMM watches [`VirtioDevice::event_fds`]
//! level-triggered, so the fd it watches must stop being readable meanwhile, or its
//! event loop would spin. That fd is therefore not the TAP but an epoll set owned by
//! the device (see [`tap::ReadGate`]) which contains the TAP only while the device
//! wants frames: the device switches its own readiness on and off without help from
//! the VMM, and [`VirtioDevice`] needs no extra method.
//!
//! Rate limiting: each direction has its own limiter (an op per frame, the frame's
//! bytes without the header). A guest frame the transmit limiter refuses stays on
//! the transmitq; a TAP frame the receive limiter refuses stays pending with the
//! gate closed, so the event loop does not spin on the readable TAP. Each limiter's
//! timerfd is in `event_fds` ([`RX_RATE_LIMITER_EVENT_TOKEN`],
//! [`TX_RATE_LIMITER_EVENT_TOKEN`]) and resumes its direction when it fires.
//!
//! [`frame`] holds the descriptor chain <-> frame logic (no fds); [`tap`] the TAP fd
//! and the gate; `host` the receive and transmit paths; [`device`] the state and
//! the [`VirtioDevice`] implementation; [`metrics`] the counters.
//!
//! [`VirtioDevice`]: crate::virtio::VirtioDevice
//! [`VirtioDevice::event_fds`]: crate::virtio::VirtioDevice::event_fds

pub mod device;
pub mod frame;
mod host;
pub mod metrics;
pub mod tap;
#[cfg(test)]
mod tap_tests;
#[cfg(test)]
mod test_utils;

use std::io;

use thiserror::Error;
use virtio_bindings::virtio_net;

pub use device::{Net, NetConfig, NetState, NetStats};
pub use frame::FrameError;
pub use metrics::NetMetrics;

/// Index of the receiveq (TAP to guest).
pub const RX_QUEUE: usize = 0;
/// Index of the transmitq (guest to TAP).
pub const TX_QUEUE: usize = 1;
/// Number of queues: one receiveq, one transmitq, no control queue.
pub const NUM_QUEUES: usize = 2;
/// Maximum size of each queue.
pub const QUEUE_MAX_SIZE: u16 = 256;
/// Most descriptors one chain may have. Without VIRTIO_RING_F_INDIRECT_DESC a chain
/// cannot be longer than the queue; the Linux driver uses at most 19 (a header and
/// MAX_SKB_FRAGS + 1 pages for a 64 KiB receive buffer).
pub const MAX_CHAIN_DESCRIPTORS: usize = QUEUE_MAX_SIZE as usize;

/// Size of `struct virtio_net_hdr_v1`, the header in front of every frame.
pub const VNET_HDR_LEN: usize = 12;
/// Offset of `num_buffers` (le16) in the header.
pub const NUM_BUFFERS_OFFSET: usize = 10;
/// Largest frame (without the header) either direction carries: a 64 KiB TSO/GSO
/// frame, an IP packet of at most 65535 bytes plus the link-layer header, with the
/// same margin other VMMs use.
pub const MAX_FRAME_LEN: usize = 65550;
/// Largest header plus frame: the size of the device's receive buffer and the
/// longest transmit chain accepted.
pub const MAX_BUFFER_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;
/// Most frames read from the TAP in one call before the device returns to the event
/// loop (it stays watched, so the loop comes back): other devices get their turn
/// during a flood.
pub const RX_FRAMES_PER_PASS: usize = QUEUE_MAX_SIZE as usize;

/// The token of the TAP in [`crate::virtio::VirtioDevice::event_fds`].
pub const TAP_EVENT_TOKEN: u32 = 0;
/// The token of the receive rate limiter's timerfd in `event_fds`.
pub const RX_RATE_LIMITER_EVENT_TOKEN: u32 = 1;
/// The token of the transmit rate limiter's timerfd in `event_fds`.
pub const TX_RATE_LIMITER_EVENT_TOKEN: u32 = 2;
/// Smallest MTU the device advertises: IPv4's minimum (RFC 791).
pub const MIN_MTU: u16 = 68;

/// Config space offset of `mac` (6 bytes).
pub const CONFIG_MAC_OFFSET: usize = 0;
/// Config space offset of `status` (le16, valid with VIRTIO_NET_F_STATUS).
pub const CONFIG_STATUS_OFFSET: usize = 6;
/// Config space offset of `mtu` (le16, valid with VIRTIO_NET_F_MTU).
pub const CONFIG_MTU_OFFSET: usize = 10;
/// Length of the config space the device fills in: `mac`, `status`,
/// `max_virtqueue_pairs` (0: MQ is not offered) and `mtu`. The later fields need
/// features the device does not offer (SPEED_DUPLEX, RSS) and read as zero.
pub const CONFIG_SPACE_SIZE: usize = 12;
/// Length of a MAC address.
pub const MAC_LEN: usize = 6;

/// `status` bit: the link is up.
pub const VIRTIO_NET_S_LINK_UP: u16 = virtio_net::VIRTIO_NET_S_LINK_UP as u16;

/// Feature bits as masks (virtio 1.2, section 5.1.3).
pub mod features {
    use virtio_bindings::virtio_net as v;

    /// Device handles packets with partial checksum (guest to host).
    pub const CSUM: u64 = 1 << v::VIRTIO_NET_F_CSUM;
    /// Driver handles packets with partial checksum (host to guest).
    pub const GUEST_CSUM: u64 = 1 << v::VIRTIO_NET_F_GUEST_CSUM;
    /// `mac` in the config space is valid.
    pub const MAC: u64 = 1 << v::VIRTIO_NET_F_MAC;
    /// Driver can receive TSOv4.
    pub const GUEST_TSO4: u64 = 1 << v::VIRTIO_NET_F_GUEST_TSO4;
    /// Driver can receive TSOv6.
    pub const GUEST_TSO6: u64 = 1 << v::VIRTIO_NET_F_GUEST_TSO6;
    /// Driver can receive UFO.
    pub const GUEST_UFO: u64 = 1 << v::VIRTIO_NET_F_GUEST_UFO;
    /// Device can receive TSOv4.
    pub const HOST_TSO4: u64 = 1 << v::VIRTIO_NET_F_HOST_TSO4;
    /// Device can receive TSOv6.
    pub const HOST_TSO6: u64 = 1 << v::VIRTIO_NET_F_HOST_TSO6;
    /// Device can receive UFO.
    pub const HOST_UFO: u64 = 1 << v::VIRTIO_NET_F_HOST_UFO;
    /// `status` in the config space is valid.
    pub const STATUS: u64 = 1 << v::VIRTIO_NET_F_STATUS;
    /// `mtu` in the config space is valid.
    pub const MTU: u64 = 1 << v::VIRTIO_NET_F_MTU;
}

/// Why a network device could not be created. Each variant names the TAP and, for
/// system calls, the call that failed.
#[derive(Debug, Error)]
pub enum Error {
    /// The name cannot be a Linux interface name.
    #[error("TAP name {tap:?} is invalid: {reason}")]
    InvalidName {
        /// The configured name.
        tap: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The configured MAC address is a multicast or the all-zero address.
    #[error("MAC address {mac} for TAP {tap} is not a unicast address")]
    InvalidMac {
        /// The TAP.
        tap: String,
        /// The address, as `xx:xx:xx:xx:xx:xx`.
        mac: String,
    },
    /// The configured MTU is below [`MIN_MTU`].
    #[error("MTU {mtu} for TAP {tap} is below the minimum of {MIN_MTU}")]
    InvalidMtu {
        /// The TAP.
        tap: String,
        /// The configured MTU.
        mtu: u16,
    },
    /// No interface of that name exists (cabin does not create TAPs).
    #[error(
        "TAP {tap} does not exist ({call}); create it first: `ip tuntap add dev {tap} mode tap`"
    )]
    NoSuchDevice {
        /// The TAP.
        tap: String,
        /// The call that found it missing.
        call: &'static str,
    },
    /// The interface exists but is not a TAP (a TUN, a bridge, a physical card, a
    /// multi-queue TAP).
    #[error("{tap} is not a single-queue TAP device ({call}: EINVAL)")]
    NotATap {
        /// The interface.
        tap: String,
        /// The call that refused it.
        call: &'static str,
    },
    /// Another process (or another device of this VM) has the TAP open.
    #[error("TAP {tap} is busy ({call}: EBUSY): another process has it open")]
    Busy {
        /// The TAP.
        tap: String,
        /// The call that found it busy.
        call: &'static str,
    },
    /// No permission to open /dev/net/tun or to attach to the TAP.
    #[error(
        "Permission denied for TAP {tap} ({call}): cabin needs CAP_NET_ADMIN or must own the \
         TAP (`ip tuntap add dev {tap} mode tap user USER`)"
    )]
    PermissionDenied {
        /// The TAP.
        tap: String,
        /// The call that was refused.
        call: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Any other failure of a call while opening or setting up the TAP.
    #[error("Cannot set up TAP {tap}: {call} failed")]
    Setup {
        /// The TAP.
        tap: String,
        /// The failed call.
        call: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}
