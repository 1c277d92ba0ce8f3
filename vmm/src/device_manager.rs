//! Places virtio-mmio devices: an MMIO window and a GSI each, their irqfd and
//! ioeventfds registered with KVM, and their `virtio_mmio.device=` entry on the
//! kernel command line.

use std::sync::{Arc, Mutex};

use arch::layout::{IRQ_BASE, IRQ_MAX, VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START};
use devices::bus::Bus;
use devices::virtio::mmio::{MmioTransport, NOTIFY_REG_OFFSET};
use devices::virtio::{IrqTrigger, VirtioDevice};
use devices::GuestMemoryMmap;
use kvm_ioctls::{IoEventAddress, VmFd};
use linux_loader::cmdline::Cmdline;
use thiserror::Error;
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Failures while placing a device.
#[derive(Debug, Error)]
pub enum DeviceManagerError {
    /// More devices than interrupt lines.
    #[error("Too many virtio devices: at most {} fit", IRQ_MAX - IRQ_BASE + 1)]
    OutOfIrqs,
    /// An eventfd could not be created.
    #[error("Cannot create an eventfd for {0}")]
    EventFd(String, #[source] std::io::Error),
    /// KVM refused an irqfd or ioeventfd.
    #[error("Cannot register the {what} of {name} with KVM")]
    Kvm {
        /// irqfd or ioeventfd.
        what: &'static str,
        /// Device name.
        name: String,
        /// KVM's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The transport could not be created.
    #[error("Cannot create the virtio-mmio transport of {0}")]
    Transport(String, #[source] devices::virtio::mmio::Error),
    /// The window clashes on the bus.
    #[error("Cannot place {0} on the MMIO bus")]
    Bus(String, #[source] devices::bus::Error),
    /// The command line has no room for the device entry.
    #[error("No room on the kernel command line for {0}: shorten --cmdline")]
    Cmdline(String, #[source] linux_loader::cmdline::Error),
}

/// A placed virtio device.
#[derive(Debug)]
pub struct VirtioSlot {
    /// Name for messages ("virtio-blk vda").
    pub name: String,
    /// Guest-physical base of its register window.
    pub addr: u64,
    /// Its GSI.
    pub irq: u32,
    /// The transport (also on the MMIO bus).
    pub transport: Arc<Mutex<MmioTransport>>,
}

/// Hands out MMIO windows and GSIs in order.
#[derive(Debug, Default)]
pub struct DeviceManager {
    /// Devices placed so far, in order.
    pub slots: Vec<VirtioSlot>,
}

impl DeviceManager {
    /// Places `device`: window, GSI, irqfd, ioeventfds, bus entry and command line.
    pub fn attach_virtio(
        &mut self,
        name: String,
        device: Arc<Mutex<dyn VirtioDevice>>,
        vm_fd: &VmFd,
        mem: &GuestMemoryMmap,
        mmio_bus: &mut Bus,
        cmdline: &mut Cmdline,
    ) -> Result<(), DeviceManagerError> {
        let index = u32::try_from(self.slots.len()).map_err(|_| DeviceManagerError::OutOfIrqs)?;
        let irq = IRQ_BASE
            .checked_add(index)
            .filter(|irq| *irq <= IRQ_MAX)
            .ok_or(DeviceManagerError::OutOfIrqs)?;
        let addr = VIRTIO_MMIO_START + u64::from(index) * VIRTIO_MMIO_SIZE;

        let irq_evt =
            EventFd::new(EFD_NONBLOCK).map_err(|e| DeviceManagerError::EventFd(name.clone(), e))?;
        vm_fd
            .register_irqfd(&irq_evt, irq)
            .map_err(|source| DeviceManagerError::Kvm {
                what: "irqfd",
                name: name.clone(),
                source,
            })?;
        let transport = MmioTransport::new(mem.clone(), device, IrqTrigger::new(irq_evt))
            .map_err(|e| DeviceManagerError::Transport(name.clone(), e))?;
        for (queue, evt) in transport.queue_evts().iter().enumerate() {
            let datamatch = u32::try_from(queue).unwrap_or(u32::MAX);
            vm_fd
                .register_ioevent(
                    evt,
                    &IoEventAddress::Mmio(addr + NOTIFY_REG_OFFSET),
                    datamatch,
                )
                .map_err(|source| DeviceManagerError::Kvm {
                    what: "ioeventfd",
                    name: name.clone(),
                    source,
                })?;
        }
        let transport = Arc::new(Mutex::new(transport));
        mmio_bus
            .insert(transport.clone(), addr, VIRTIO_MMIO_SIZE)
            .map_err(|e| DeviceManagerError::Bus(name.clone(), e))?;
        cmdline
            .add_virtio_mmio_device(VIRTIO_MMIO_SIZE, GuestAddress(addr), irq, None)
            .map_err(|e| DeviceManagerError::Cmdline(name.clone(), e))?;
        self.slots.push(VirtioSlot {
            name,
            addr,
            irq,
            transport,
        });
        Ok(())
    }
}
