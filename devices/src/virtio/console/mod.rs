//! virtio-console (stub, being written).
