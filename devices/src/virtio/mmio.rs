//! virtio-mmio transport (stub, being written).
