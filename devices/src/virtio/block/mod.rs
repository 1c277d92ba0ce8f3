//! virtio-blk (stub, being written).
