//! Counters of an entropy device, shared with the VMM for its metrics endpoint.

use std::sync::atomic::AtomicU64;

use serde::Serialize;

/// What an entropy device did since it was created; serialized (serde) as a JSON
/// object of plain numbers.
#[derive(Debug, Default, Serialize)]
pub struct RngMetrics {
    /// Activations that failed.
    pub activate_fails: AtomicU64,
    /// Requests (chains) completed.
    pub entropy_event_count: AtomicU64,
    /// Random bytes given to the guest.
    pub entropy_bytes: AtomicU64,
    /// Times `getrandom(2)` failed (the request got no bytes).
    pub host_rng_fails: AtomicU64,
    /// Times a request was held back by the rate limiter.
    pub entropy_rate_limiter_throttled: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::add_to_counter;

    #[test]
    fn rng_metrics_serialize_plain_numbers() {
        let metrics = RngMetrics::default();
        add_to_counter(&metrics.entropy_bytes, 64);

        let json = serde_json::to_value(&metrics).unwrap();

        assert_eq!(json["entropy_bytes"], 64);
        assert_eq!(json["host_rng_fails"], 0);
        assert_eq!(json.as_object().unwrap().len(), 5);
    }
}
