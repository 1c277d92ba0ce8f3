//! Counters of a network device, shared with the VMM for its metrics endpoint.

use std::sync::atomic::AtomicU64;

use serde::Serialize;

/// What a network device did since it was created; byte counts exclude the
/// virtio-net header. Serialized (serde) as a JSON object of plain numbers.
#[derive(Debug, Default, Serialize)]
pub struct NetMetrics {
    /// Bytes delivered to the guest.
    pub rx_bytes: AtomicU64,
    /// Frames delivered to the guest.
    pub rx_packets: AtomicU64,
    /// Bytes written to the TAP.
    pub tx_bytes: AtomicU64,
    /// Frames written to the TAP.
    pub tx_packets: AtomicU64,
    /// Frames from the TAP the guest never got: too big for its receive buffer,
    /// shorter than a header, or pending when the device was reset or the TAP failed.
    pub rx_drops: AtomicU64,
    /// Well-formed guest frames the TAP did not take (link down, write error, TAP
    /// gone).
    pub tx_drops: AtomicU64,
    /// Times a received frame was held back by the receive rate limiter.
    pub rx_rate_limiter_throttled: AtomicU64,
    /// Times a guest frame was held back by the transmit rate limiter.
    pub tx_rate_limiter_throttled: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::add_to_counter;

    #[test]
    fn net_metrics_serialize_plain_numbers() {
        let metrics = NetMetrics::default();
        add_to_counter(&metrics.tx_packets, 3);

        let json = serde_json::to_value(&metrics).unwrap();

        assert_eq!(json["tx_packets"], 3);
        assert_eq!(json["rx_drops"], 0);
        assert_eq!(json.as_object().unwrap().len(), 8);
    }
}
