//! The virtio-rng device: queue processing, the host's getrandom, rate limiting.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use crate::GuestMemoryMmap;
use log::{debug, Level};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::Bytes;

use super::metrics::RngMetrics;
use super::request::writable_segments;
use super::{MAX_REQUEST_BYTES, QUEUE_SIZE, RATE_LIMITER_EVENT_TOKEN};
use crate::rate_limiter::{RateLimiter, RateLimiterConfig};
use crate::ratelimit::log_ratelimited;
use crate::snapshot::RestoreError;
use crate::virtio::{
    add_to_counter, device_type, next_chain_checked, ActivateError, ActivateParams, IrqTrigger,
    VirtioDevice, VirtioDeviceState, VIRTIO_F_VERSION_1, VIRTIO_MMIO_INT_VRING,
};

/// What the device holds between DRIVER_OK and reset.
#[derive(Debug)]
struct Active {
    mem: GuestMemoryMmap,
    queue: Queue,
    irq: IrqTrigger,
}

/// What became of an available chain.
enum Served {
    /// Completed with this many bytes written.
    Done(u32),
    /// Held back by the rate limiter: it must stay on the queue.
    Throttled,
}

/// Fills `buf` from the host's `getrandom(2)`.
fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0usize;
    while let Some(rest) = buf.get_mut(done..).filter(|rest| !rest.is_empty()) {
        // SAFETY: `rest` is a live, exclusively borrowed byte slice; getrandom writes
        // at most `rest.len()` bytes at its start and keeps no pointer.
        let ret = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if ret < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // 0 <= ret <= rest.len().
        done = done.saturating_add(usize::try_from(ret).unwrap_or(0));
    }
    Ok(())
}

/// A virtio-rng device.
#[derive(Debug)]
pub struct Rng {
    /// Always there (unlimited by default) so that limits can be set at runtime
    /// without creating a timerfd.
    rate_limiter: RateLimiter,
    metrics: Arc<RngMetrics>,
    acked_features: u64,
    /// Random bytes for one request, reused.
    buf: Vec<u8>,
    active: Option<Active>,
}

impl Rng {
    /// A device with an optional rate limit; creates the limiter's timerfd.
    pub fn new(rate_limiter: Option<RateLimiterConfig>) -> io::Result<Rng> {
        Ok(Rng {
            rate_limiter: RateLimiter::new(&rate_limiter.unwrap_or_default())?,
            metrics: Arc::new(RngMetrics::default()),
            acked_features: 0,
            buf: Vec::new(),
            active: None,
        })
    }

    /// The device's counters, shared.
    pub fn metrics(&self) -> Arc<RngMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Replaces the rate limits (PATCH /entropy); `None` buckets do not limit.
    pub fn update_rate_limiter(&mut self, config: &RateLimiterConfig) {
        self.rate_limiter.update(config);
    }

    /// Features the driver accepted at the last activation.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Serves the queue unless the rate limiter holds it back (its timer resumes
    /// it), and interrupts the driver if it wants to know.
    fn process(&mut self) {
        if self.rate_limiter.is_blocked() {
            return;
        }
        let Some(Active { mem, queue, irq }) = self.active.as_mut() else {
            return;
        };
        let mut used = 0usize;
        while let Some(chain) = next_chain_checked(queue, mem, irq, "virtio-rng") {
            let head = chain.head_index();
            let served = serve(
                chain,
                mem,
                &mut self.rate_limiter,
                &self.metrics,
                &mut self.buf,
            );
            let Served::Done(len) = served else {
                queue.go_to_previous_position();
                break;
            };
            if let Err(e) = queue.add_used(&*mem, head, len) {
                log_ratelimited!(Level::Warn, "virtio-rng: cannot complete chain {head}: {e}");
            }
            used = used.saturating_add(1);
        }
        if used == 0 {
            return;
        }
        match queue.needs_notification(&*mem) {
            Ok(false) => {}
            Ok(true) => {
                if let Err(e) = irq.trigger(VIRTIO_MMIO_INT_VRING) {
                    log_ratelimited!(Level::Error, "virtio-rng: cannot raise the interrupt: {e}");
                }
            }
            Err(e) => log_ratelimited!(Level::Warn, "virtio-rng: cannot read the used event: {e}"),
        }
    }
}

/// Fills one chain, once the rate limiter admits it.
fn serve(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    limiter: &mut RateLimiter,
    metrics: &RngMetrics,
    buf: &mut Vec<u8>,
) -> Served {
    let head = chain.head_index();
    let parsed = writable_segments(chain, mem, MAX_REQUEST_BYTES);
    let bytes = parsed.as_ref().map_or(0, |(_, total)| *total);
    if !limiter.admit(u64::from(bytes)) {
        add_to_counter(&metrics.entropy_rate_limiter_throttled, 1);
        return Served::Throttled;
    }
    add_to_counter(&metrics.entropy_event_count, 1);
    let segments = match parsed {
        Ok((segments, _)) => segments,
        Err(e) => {
            log_ratelimited!(Level::Warn, "virtio-rng: chain {head} gets nothing: {e}");
            return Served::Done(0);
        }
    };
    // bytes <= MAX_REQUEST_BYTES.
    buf.resize(usize::try_from(bytes).unwrap_or(0), 0);
    if let Err(e) = fill_random(buf) {
        add_to_counter(&metrics.host_rng_fails, 1);
        log_ratelimited!(Level::Error, "virtio-rng: getrandom failed: {e}");
        return Served::Done(0);
    }
    let mut written: u32 = 0;
    let mut rest = buf.as_slice();
    for seg in segments {
        let (now, later) = rest.split_at(usize::try_from(seg.len).unwrap_or(0).min(rest.len()));
        if let Err(e) = mem.write_slice(now, seg.addr) {
            // Checked to be in memory; a hot-unplugged region is the only way here.
            log_ratelimited!(Level::Warn, "virtio-rng: cannot fill chain {head}: {e}");
            break;
        }
        written = written.saturating_add(seg.len);
        rest = later;
    }
    add_to_counter(&metrics.entropy_bytes, u64::from(written));
    Served::Done(written)
}

impl VirtioDevice for Rng {
    fn save(&self) -> VirtioDeviceState {
        VirtioDeviceState::Rng(self.save_state())
    }

    fn restore(
        &mut self,
        state: &VirtioDeviceState,
        activate: Option<ActivateParams>,
    ) -> Result<(), RestoreError> {
        self.restore_state(state, activate)
    }

    fn device_type(&self) -> u32 {
        device_type::RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // virtio-rng has no configuration space.
        data.fill(0);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log_ratelimited!(
            Level::Warn,
            "virtio-rng: ignoring {}-byte config write at {offset:#x}: no config space",
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
        let got = queues.len();
        let result = match <[Queue; 1]>::try_from(queues) {
            Err(_) => Err(ActivateError::QueueCount { expected: 1, got }),
            Ok([queue]) if !queue.ready() => Err(ActivateError::QueueNotReady(0)),
            Ok([queue]) => Ok(queue),
        };
        let queue = result.inspect_err(|_| add_to_counter(&self.metrics.activate_fails, 1))?;
        self.acked_features = acked_features;
        self.active = Some(Active { mem, queue, irq });
        debug!("virtio-rng: activated with features {acked_features:#x}");
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
    }

    fn process_queue(&mut self, index: usize) {
        if index != 0 {
            log_ratelimited!(
                Level::Warn,
                "virtio-rng: notification for nonexistent queue {index}"
            );
            return;
        }
        if self.active.is_none() {
            log_ratelimited!(
                Level::Warn,
                "virtio-rng: queue notification before activation"
            );
            return;
        }
        self.process();
    }

    fn event_fds(&self) -> Vec<(RawFd, u32)> {
        vec![(self.rate_limiter.as_raw_fd(), RATE_LIMITER_EVENT_TOKEN)]
    }

    fn process_event(&mut self, token: u32) {
        if token != RATE_LIMITER_EVENT_TOKEN {
            log_ratelimited!(
                Level::Warn,
                "virtio-rng: event for unknown token {token}, ignored"
            );
            return;
        }
        if self.rate_limiter.timer_expired(&"virtio-rng") {
            self.process();
        }
    }
}

#[path = "persist.rs"]
mod persist;
pub use persist::RngState;

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
