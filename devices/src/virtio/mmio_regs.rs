//! Register offsets within the window (virtio 1.2, section 4.2.2, version 2 layout).
//! R: the driver reads it; W: the driver writes it.

/// R: the magic value "virt".
pub const MAGIC_VALUE: u64 = 0x000;
/// R: the register layout version (2).
pub const VERSION: u64 = 0x004;
/// R: the virtio device id.
pub const DEVICE_ID: u64 = 0x008;
/// R: the vendor id.
pub const VENDOR_ID: u64 = 0x00c;
/// R: 32 of the device's feature bits, chosen by DeviceFeaturesSel.
pub const DEVICE_FEATURES: u64 = 0x010;
/// W: which 32 feature bits DeviceFeatures shows (0: bits 0-31, 1: bits 32-63).
pub const DEVICE_FEATURES_SEL: u64 = 0x014;
/// W: 32 of the feature bits the driver accepts, chosen by DriverFeaturesSel.
pub const DRIVER_FEATURES: u64 = 0x020;
/// W: which 32 feature bits DriverFeatures sets.
pub const DRIVER_FEATURES_SEL: u64 = 0x024;
/// W: the queue the Queue* registers apply to.
pub const QUEUE_SEL: u64 = 0x030;
/// R: maximum size of the selected queue, 0 if it does not exist.
pub const QUEUE_NUM_MAX: u64 = 0x034;
/// W: size of the selected queue.
pub const QUEUE_NUM: u64 = 0x038;
/// RW: the selected queue is set up (1) or not (0).
pub const QUEUE_READY: u64 = 0x044;
/// W: the driver made buffers available in the queue with the written index.
pub const QUEUE_NOTIFY: u64 = 0x050;
/// R: pending interrupt causes (VIRTIO_MMIO_INT_*).
pub const INTERRUPT_STATUS: u64 = 0x060;
/// W: interrupt causes the driver handled.
pub const INTERRUPT_ACK: u64 = 0x064;
/// RW: device status; writing 0 resets the device.
pub const STATUS: u64 = 0x070;
/// W: low 32 bits of the selected queue's descriptor table address.
pub const QUEUE_DESC_LOW: u64 = 0x080;
/// W: high 32 bits of the selected queue's descriptor table address.
pub const QUEUE_DESC_HIGH: u64 = 0x084;
/// W: low 32 bits of the selected queue's driver area (available ring).
pub const QUEUE_DRIVER_LOW: u64 = 0x090;
/// W: high 32 bits of the selected queue's driver area (available ring).
pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
/// W: low 32 bits of the selected queue's device area (used ring).
pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
/// W: high 32 bits of the selected queue's device area (used ring).
pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
/// W: the shared memory region the SHM* registers describe.
pub const SHM_SEL: u64 = 0x0ac;
/// R: low 32 bits of the selected shared memory region's length.
pub const SHM_LEN_LOW: u64 = 0x0b0;
/// R: high 32 bits of the selected shared memory region's length.
pub const SHM_LEN_HIGH: u64 = 0x0b4;
/// R: low 32 bits of the selected shared memory region's address.
pub const SHM_BASE_LOW: u64 = 0x0b8;
/// R: high 32 bits of the selected shared memory region's address.
pub const SHM_BASE_HIGH: u64 = 0x0bc;
/// R: changes whenever the configuration space changes.
pub const CONFIG_GENERATION: u64 = 0x0fc;
/// Start of the device-specific configuration space.
pub const CONFIG: u64 = 0x100;
