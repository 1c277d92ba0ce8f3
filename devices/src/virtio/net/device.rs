//! The virtio-net device: the TAP, the config space and both queues.

use std::fmt;
use std::io;
use std::os::fd::RawFd;

use log::{debug, error, info, warn, Level};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use super::frame::{self, FrameError};
use super::tap::{offload, probe_offloads, Backend, ReadGate, Tap};
use super::{
    features, Error, CONFIG_MAC_OFFSET, CONFIG_SPACE_SIZE, CONFIG_STATUS_OFFSET, MAC_LEN,
    MAX_BUFFER_LEN, NUM_QUEUES, QUEUE_MAX_SIZE, RX_FRAMES_PER_PASS, RX_QUEUE, TAP_EVENT_TOKEN,
    TX_QUEUE, VIRTIO_NET_S_LINK_UP, VNET_HDR_LEN,
};
use crate::ratelimit::log_ratelimited;
use crate::virtio::{
    device_type, ActivateError, ActivateParams, IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1,
    VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING,
};

/// Queue sizes reported to the transport, one per queue.
const QUEUE_MAX_SIZES: [u16; NUM_QUEUES] = [QUEUE_MAX_SIZE; NUM_QUEUES];
/// First byte of a default MAC: locally administered (bit 1), unicast (bit 0 clear).
const DEFAULT_MAC_PREFIX: u8 = 0x52;

/// How a network device is backed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Name of an existing TAP device (`ip tuntap add dev NAME mode tap`).
    pub tap: String,
    /// The guest's MAC address; by default one derived from the TAP name.
    pub mac: Option<[u8; MAC_LEN]>,
}

/// Frame counters since the device was created. Byte counts exclude the virtio-net
/// header.
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

/// What the device holds between activation and reset.
#[derive(Debug)]
struct Active {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    irq: IrqTrigger,
}

/// What one read from the TAP gave.
enum Read {
    /// A frame of this length (header included) is in the receive buffer.
    Frame(usize),
    /// Something that is no frame was read and dropped; read on.
    Skipped,
    /// The TAP is drained (the gate is open) or failed.
    Stop,
}

/// What became of the pending frame.
enum Delivery {
    /// Written to a receive chain of the given used length.
    Delivered(u32),
    /// Larger than the next receive chain: dropped, the chain is kept.
    DoesNotFit(FrameError),
    /// The next receive chain was malformed and returned unused; the frame waits.
    BadChain(FrameError),
    /// The driver has posted no receive buffer.
    NoBuffer,
}

/// The host half of the device: everything but the queues, so queue processing can
/// borrow both halves at once.
struct Host {
    /// `virtio-net<index> (<tap>)`, for messages.
    label: String,
    backend: Box<dyn Backend>,
    /// What the VMM watches: the TAP, while the device wants frames.
    gate: ReadGate,
    /// The TAP failed for good: it is no longer read, written or watched.
    gone: bool,
    /// A write failed with EIO (the TAP's link is down) and that was logged.
    link_down_logged: bool,
    /// Receive buffer for one frame with its header.
    rx_buf: Box<[u8]>,
    /// Length of the frame in `rx_buf` still waiting for a receive chain.
    pending: Option<usize>,
    /// Transmit buffer, reused.
    tx_buf: Vec<u8>,
    /// The driver accepted VIRTIO_NET_F_GUEST_CSUM.
    guest_csum: bool,
    stats: NetStats,
}

/// A virtio-net device on a TAP.
pub struct Net {
    host: Host,
    mac: [u8; MAC_LEN],
    avail_features: u64,
    acked_features: u64,
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
            .field("stats", &self.host.stats)
            .finish_non_exhaustive()
    }
}

impl Net {
    /// Attaches to the existing TAP `config.tap` (TUNSETIFF with IFF_TAP, IFF_NO_PI
    /// and IFF_VNET_HDR, a 12-byte vnet header, nonblocking) and probes which offloads
    /// it supports. `index` numbers the device in messages.
    pub fn new(config: &NetConfig, index: usize) -> Result<Net, Error> {
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
        Net::with_backend(Box::new(tap), offloads, mac, index).map_err(|source| Error::Setup {
            tap: config.tap.clone(),
            call: "epoll_create1",
            source,
        })
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
                tx_buf: Vec::new(),
                guest_csum: false,
                stats: NetStats::default(),
            },
            mac,
            avail_features: offered_features(offloads),
            acked_features: 0,
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
        self.host.stats
    }

    /// Features the driver accepted at the last activation.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Whether the link is up (the TAP has not failed); the config space `status`.
    pub fn link_up(&self) -> bool {
        !self.host.gone
    }

    /// The configuration space: `mac`, then `status`.
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

impl Host {
    /// Moves frames from the TAP into receive chains until the TAP is drained (the
    /// gate stays open), the driver has no buffer left (the frame stays pending and
    /// the gate closes), or [`RX_FRAMES_PER_PASS`] frames were read (the gate stays
    /// open, so the event loop comes back).
    fn process_rx(&mut self, active: &mut Active) {
        let mut used = 0usize;
        let mut budget = RX_FRAMES_PER_PASS;
        while !self.gone {
            let len = match self.pending {
                Some(len) => len,
                None if budget == 0 => {
                    self.open_gate();
                    break;
                }
                None => {
                    budget -= 1;
                    match self.read_frame(&active.irq) {
                        Read::Frame(len) => {
                            self.pending = Some(len);
                            len
                        }
                        Read::Skipped => continue,
                        Read::Stop => break,
                    }
                }
            };
            match deliver(active, &self.rx_buf[..len], &self.label) {
                Delivery::Delivered(used_len) => {
                    self.pending = None;
                    used = used.saturating_add(1);
                    self.stats.rx_frames = self.stats.rx_frames.saturating_add(1);
                    self.stats.rx_bytes = self
                        .stats
                        .rx_bytes
                        .saturating_add(u64::from(used_len).saturating_sub(VNET_HDR_LEN as u64));
                }
                Delivery::DoesNotFit(e) => {
                    self.pending = None;
                    self.stats.rx_dropped = self.stats.rx_dropped.saturating_add(1);
                    log_ratelimited!(
                        Level::Warn,
                        "{}: frame dropped: {e} (is the TAP's MTU larger than the guest's?)",
                        self.label
                    );
                }
                Delivery::BadChain(e) => {
                    used = used.saturating_add(1);
                    self.stats.rx_malformed = self.stats.rx_malformed.saturating_add(1);
                    log_ratelimited!(
                        Level::Warn,
                        "{}: receive chain returned unused: {e}",
                        self.label
                    );
                }
                Delivery::NoBuffer => {
                    self.close_gate();
                    break;
                }
            }
        }
        if used > 0 {
            signal_used(&mut active.rx, &active.mem, &active.irq, &self.label);
        }
    }

    /// Reads the next frame into `rx_buf`.
    fn read_frame(&mut self, irq: &IrqTrigger) -> Read {
        loop {
            match self.backend.read_frame(&mut self.rx_buf) {
                Ok(len) => {
                    return match self.rx_buf.get_mut(..len) {
                        Some(frame) if len > VNET_HDR_LEN => {
                            frame::complete_rx_header(frame, self.guest_csum);
                            Read::Frame(len)
                        }
                        _ => {
                            self.stats.rx_dropped = self.stats.rx_dropped.saturating_add(1);
                            log_ratelimited!(
                                Level::Warn,
                                "{}: dropped a {len}-byte read from the TAP: no frame after \
                                 the header",
                                self.label
                            );
                            Read::Skipped
                        }
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.open_gate();
                    return Read::Stop;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Nothing else is expected from a healthy TAP; reading on would spin.
                Err(e) => {
                    self.fail("read", &e, irq);
                    return Read::Stop;
                }
            }
        }
    }

    /// Writes every available transmit chain to the TAP and returns the chains to the
    /// driver, with driver notifications off meanwhile.
    fn process_tx(&mut self, active: &mut Active) {
        let Active { mem, tx, irq, .. } = active;
        let mut used = 0usize;
        loop {
            if let Err(e) = tx.disable_notification(&*mem) {
                log_ratelimited!(
                    Level::Warn,
                    "{}: cannot disable transmit notifications: {e}",
                    self.label
                );
            }
            let mut this_pass = 0usize;
            while let Some(chain) = next_chain(tx, mem, &self.label) {
                let head = chain.head_index();
                self.transmit(mem, chain, irq);
                // The device writes nothing into a transmit buffer.
                add_used(tx, mem, head, 0, &self.label);
                this_pass = this_pass.saturating_add(1);
            }
            used = used.saturating_add(this_pass);
            match tx.enable_notification(&*mem) {
                // Chains arrived while notifications were off. If this pass found none,
                // the avail ring is broken: stop instead of spinning.
                Ok(true) if this_pass > 0 => {}
                Ok(_) => break,
                Err(e) => {
                    log_ratelimited!(
                        Level::Warn,
                        "{}: cannot enable transmit notifications: {e}",
                        self.label
                    );
                    break;
                }
            }
        }
        if used > 0 {
            signal_used(tx, mem, irq, &self.label);
        }
    }

    /// Sends one transmit chain to the TAP, or drops and counts it.
    fn transmit(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
        irq: &IrqTrigger,
    ) {
        let head = chain.head_index();
        if let Err(e) = frame::read_tx_frame(mem, chain, &mut self.tx_buf) {
            self.stats.tx_malformed = self.stats.tx_malformed.saturating_add(1);
            log_ratelimited!(
                Level::Warn,
                "{}: transmit chain {head} dropped: {e}",
                self.label
            );
            return;
        }
        if self.gone {
            self.stats.tx_dropped = self.stats.tx_dropped.saturating_add(1);
            return;
        }
        let len = self.tx_buf.len();
        match self.backend.write_frame(&self.tx_buf) {
            Ok(_) => {
                self.stats.tx_frames = self.stats.tx_frames.saturating_add(1);
                self.stats.tx_bytes = self
                    .stats
                    .tx_bytes
                    .saturating_add(len.saturating_sub(VNET_HDR_LEN) as u64);
                if self.link_down_logged {
                    self.link_down_logged = false;
                    info!("{}: the TAP takes frames again", self.label);
                }
            }
            Err(e) => {
                self.stats.tx_dropped = self.stats.tx_dropped.saturating_add(1);
                self.write_failed(&e, irq);
            }
        }
    }

    /// Classifies a failed TAP write: the TAP is gone, its link is down (EIO, until
    /// it is up again: logged once), or this one frame was refused.
    fn write_failed(&mut self, e: &io::Error, irq: &IrqTrigger) {
        match e.raw_os_error() {
            Some(libc::EBADFD | libc::ENODEV | libc::ENXIO) => self.fail("write", e, irq),
            Some(libc::EIO) => {
                if !self.link_down_logged {
                    self.link_down_logged = true;
                    warn!(
                        "{}: the TAP's link is down ({e}); dropping guest frames until it is up",
                        self.label
                    );
                }
            }
            _ => log_ratelimited!(
                Level::Warn,
                "{}: the TAP refused a {}-byte frame: {e}",
                self.label,
                self.tx_buf.len()
            ),
        }
    }

    /// The TAP failed for good (deleted, detached): stop using and watching it, drop
    /// the pending frame, and tell the driver the link is down. Logged once.
    fn fail(&mut self, call: &str, e: &io::Error, irq: &IrqTrigger) {
        if self.gone {
            return;
        }
        self.gone = true;
        self.close_gate();
        if self.pending.take().is_some() {
            self.stats.rx_dropped = self.stats.rx_dropped.saturating_add(1);
        }
        error!(
            "{}: TAP {call} failed ({e}); the guest's link is now down and the TAP is no \
             longer used",
            self.label
        );
        if let Err(e) = irq.trigger(VIRTIO_MMIO_INT_CONFIG) {
            error!(
                "{}: cannot signal the configuration change: {e}",
                self.label
            );
        }
    }

    /// Lets the VMM see the TAP's readiness.
    fn open_gate(&mut self) {
        let fd = self.backend.ready_fd();
        if let Err(e) = self.gate.open(fd) {
            // Without the TAP in the gate, frames would wait until the next receive
            // notification; nothing better to do than say so.
            log_ratelimited!(Level::Error, "{}: cannot watch the TAP: {e}", self.label);
        }
    }

    /// Hides the TAP's readiness from the VMM.
    fn close_gate(&mut self) {
        let fd = self.backend.ready_fd();
        if let Err(e) = self.gate.close(fd) {
            log_ratelimited!(
                Level::Error,
                "{}: cannot stop watching the TAP: {e}",
                self.label
            );
        }
    }
}

/// Puts `frame` into the next receive chain, if there is one.
fn deliver(active: &mut Active, frame: &[u8], label: &str) -> Delivery {
    let Active { mem, rx, .. } = active;
    let Some(chain) = next_chain(rx, mem, label) else {
        return Delivery::NoBuffer;
    };
    let head = chain.head_index();
    match frame::write_rx_frame(mem, chain, frame) {
        Ok(len) => {
            add_used(rx, mem, head, len, label);
            Delivery::Delivered(len)
        }
        Err(e @ FrameError::DoesNotFit { .. }) => {
            // The chain is fine, only too small for this frame: keep it for the next.
            rx.go_to_previous_position();
            Delivery::DoesNotFit(e)
        }
        Err(e) => {
            add_used(rx, mem, head, 0, label);
            Delivery::BadChain(e)
        }
    }
}

/// The next available chain. Like `pop_descriptor_chain`, but a broken avail ring
/// (the guest controls it) is logged rate-limited.
fn next_chain<'m>(
    queue: &mut Queue,
    mem: &'m GuestMemoryMmap,
    label: &str,
) -> Option<DescriptorChain<&'m GuestMemoryMmap>> {
    match queue.iter(mem) {
        Ok(mut chains) => chains.next(),
        Err(e) => {
            log_ratelimited!(Level::Warn, "{label}: cannot read the avail ring: {e}");
            None
        }
    }
}

/// Returns chain `head` to the used ring with `len` bytes written, logging failure.
fn add_used(queue: &mut Queue, mem: &GuestMemoryMmap, head: u16, len: u32, label: &str) {
    if let Err(e) = queue.add_used(mem, head, len) {
        log_ratelimited!(Level::Warn, "{label}: cannot return chain {head}: {e}");
    }
}

/// Raises the used-buffer interrupt if the driver wants one for this queue.
fn signal_used(queue: &mut Queue, mem: &GuestMemoryMmap, irq: &IrqTrigger, label: &str) {
    match queue.needs_notification(mem) {
        Ok(false) => {}
        Ok(true) => {
            if let Err(e) = irq.trigger(VIRTIO_MMIO_INT_VRING) {
                log_ratelimited!(Level::Error, "{label}: cannot raise the interrupt: {e}");
            }
        }
        Err(e) => log_ratelimited!(Level::Warn, "{label}: cannot read the used event: {e}"),
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
        if self.host.pending.take().is_some() {
            self.host.stats.rx_dropped = self.host.stats.rx_dropped.saturating_add(1);
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
        vec![(self.host.gate.as_raw_fd(), TAP_EVENT_TOKEN)]
    }

    fn process_event(&mut self, token: u32) {
        if token != TAP_EVENT_TOKEN {
            log_ratelimited!(
                Level::Warn,
                "{}: event for unknown token {token}, ignored",
                self.host.label
            );
            return;
        }
        if let Some(active) = self.active.as_mut() {
            self.host.process_rx(active);
        }
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
