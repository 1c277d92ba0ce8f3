//! Building a VM from a [`VmConfig`]: one linear recipe of small steps.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use arch::layout;
use devices::bus::Bus;
use devices::legacy::{AcpiPm, MachineStop, PciHostBridge, Serial, I8042};
use devices::virtio::block::{Block, BlockConfig};
use devices::virtio::console::Console;
use devices::virtio::net::Net;
use devices::virtio::rng::Rng;
use devices::virtio::vsock::{Vsock, VsockConfig as VsockDeviceConfig};
use devices::GuestMemoryMmap;
use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
    KVM_MEM_LOG_DIRTY_PAGES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use linux_loader::cmdline::Cmdline;
use log::info;
use thiserror::Error;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::config::{
    host_mem_total_bytes, ConfigError, ConsoleKind, HostLimits, HugePages, VmConfig,
};
use crate::console_input::{ConsoleDevice, ConsoleInput};
use crate::device_manager::{DeviceManager, DeviceManagerError};
use crate::kvm::{open_kvm, KvmError};
use crate::loader::{self, LoaderError};
use crate::metrics::metrics;
use crate::stdio::ConsoleOut;

/// Failures while building a VM.
#[derive(Debug, Error)]
pub enum BuildError {
    /// KVM is unusable.
    #[error(transparent)]
    Kvm(#[from] KvmError),
    /// The user's configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Kernel, initrd or command line could not be loaded.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// Host memory size unknown.
    #[error("Cannot read the host's memory size from /proc/meminfo")]
    HostMemory(#[source] std::io::Error),
    /// A KVM ioctl failed while setting up the VM.
    #[error("KVM {0} failed")]
    KvmIoctl(&'static str, #[source] kvm_ioctls::Error),
    /// Guest memory could not be mapped.
    #[error("Cannot map {0} MiB of guest memory")]
    GuestMemory(u64, #[source] vm_memory::mmap::FromRangesError),
    /// Guest memory could not be mapped on huge pages.
    #[error("Cannot map {0} MiB of guest memory on 2 MiB huge pages: reserve them first (echo N > /proc/sys/vm/nr_hugepages, N = MiB / 2)")]
    HugePages(u64, #[source] std::io::Error),
    /// The serial output file could not be opened.
    #[error("Cannot open serial_out_path {0}")]
    SerialOut(PathBuf, #[source] std::io::Error),
    /// The entropy device could not be created.
    #[error("Cannot create the entropy device")]
    Entropy(#[source] std::io::Error),
    /// The vsock device could not be created (its socket, mostly).
    #[error("Cannot create the vsock device")]
    Vsock(#[source] devices::virtio::vsock::Error),
    /// The zero page could not be written.
    #[error("Cannot write the boot parameters")]
    BootParams(#[source] arch::boot::Error),
    /// The MP table could not be written.
    #[error("Cannot write the MP table")]
    MpTable(#[source] arch::mptable::Error),
    /// The ACPI tables could not be written.
    #[error("Cannot write the ACPI tables")]
    Acpi(#[source] arch::acpi::Error),
    /// CPUID could not be set up.
    #[error("Cannot set up CPUID for vCPU {0}")]
    Cpuid(u32, #[source] arch::cpuid::Error),
    /// Segment registers could not be set up.
    #[error("Cannot set up the boot segments and page tables")]
    Sregs(#[source] arch::regs::Error),
    /// KVM accepted fewer MSRs than given.
    #[error("KVM accepted {set} of {wanted} boot MSRs")]
    Msrs {
        /// How many KVM set.
        set: usize,
        /// How many were given.
        wanted: usize,
    },
    /// An eventfd could not be created.
    #[error("Cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// A device could not be created.
    #[error("Cannot create the {0} device")]
    Device(&'static str, #[source] devices::legacy::Error),
    /// A disk image could not be opened as a block device.
    #[error("Cannot use disk {0}")]
    Disk(std::path::PathBuf, #[source] devices::virtio::block::Error),
    /// A TAP could not be used.
    #[error("Cannot use TAP {0}")]
    Net(String, #[source] devices::virtio::net::Error),
    /// A virtio device could not be placed.
    #[error(transparent)]
    DeviceManager(#[from] DeviceManagerError),
    /// A device range clashes with another.
    #[error("Cannot place the {0} device on its bus")]
    Bus(&'static str, #[source] devices::bus::Error),
}

pub(crate) fn ioctl(name: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> BuildError {
    move |e| BuildError::KvmIoctl(name, e)
}

/// The devices the VMM thread needs after boot.
#[derive(Debug)]
pub struct LegacyDevices {
    /// COM1.
    pub serial: Arc<Mutex<Serial>>,
    /// Signalled when the guest has read COM1's receive FIFO empty.
    pub serial_input_room: EventFd,
    /// Keyboard controller (reset, Ctrl-Alt-Del).
    pub i8042: Arc<Mutex<I8042>>,
    /// Written by the i8042 when the guest resets the machine.
    pub reset_evt: EventFd,
    /// ACPI sleep control and power button.
    pub acpi_pm: Arc<Mutex<AcpiPm>>,
    /// Written by the ACPI device when the guest powers the machine off.
    pub poweroff_evt: EventFd,
    /// Raised with either of the two above, before it is written: vCPUs stop
    /// entering the guest (see [`MachineStop`]).
    pub guest_stop: Arc<AtomicBool>,
}

/// A VM ready to run: memory loaded, devices attached, vCPUs configured.
#[derive(Debug)]
pub struct BuiltVm {
    /// The KVM VM (kept alive as long as the VM runs).
    pub vm_fd: VmFd,
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// Port I/O bus.
    pub pio: Arc<Bus>,
    /// MMIO bus.
    pub mmio: Arc<Bus>,
    /// Legacy devices.
    pub legacy: LegacyDevices,
    /// virtio devices.
    pub devices: DeviceManager,
    /// Where host stdin goes.
    pub console_input: ConsoleInput,
    /// Configured vCPUs, index order.
    pub vcpus: Vec<VcpuFd>,
    /// The CPUID each vCPU was given, index order.
    pub cpuids: Vec<Vec<kvm_bindings::kvm_cpuid_entry2>>,
    /// The final kernel command line.
    pub cmdline: String,
    /// The block devices, in `config.disks` order (for PATCH /drives).
    pub disks: Vec<Arc<Mutex<Block>>>,
    /// The network devices, in `config.nets` order (for PATCH /network-interfaces).
    pub nets: Vec<Arc<Mutex<Net>>>,
    /// The MSRs a snapshot saves (KVM_GET_MSR_INDEX_LIST).
    pub msr_indices: Vec<u32>,
}

/// Builds a VM: validates, creates the KVM VM, loads the guest and configures vCPUs.
pub fn build_vm(config: &VmConfig) -> Result<BuiltVm, BuildError> {
    // File mistakes first: they need no KVM and are the commonest.
    config.validate_files()?;
    let mut cmdline = loader::build_cmdline(&with_root_device(config))?;
    let kvm = open_kvm()?;
    let limits = host_limits(&kvm)?;
    config.validate(&limits)?;

    let vm_fd = create_vm(&kvm)?;
    let mem = create_guest_memory(config)?;
    register_guest_memory(&vm_fd, &mem, config.machine.track_dirty_pages)?;

    let kernel_path = config.kernel.as_deref().ok_or(ConfigError::NoKernel)?;
    let kernel = loader::load_kernel(&mem, kernel_path, config.mem_size_mib)?;
    let initrd = match &config.initrd {
        Some(path) => Some(loader::load_initrd(&mem, path)?),
        None => None,
    };
    let devices = attach_devices(config, &vm_fd, &mem, &mut cmdline)?;
    let acpi_rsdp = if config.machine.no_acpi {
        None
    } else {
        Some(write_acpi_tables(&mem, config.vcpus, &devices.manager)?)
    };

    let cmdline_addr = GuestAddress(layout::CMDLINE_START);
    let cmdline_size = loader::write_cmdline(&mem, cmdline_addr, &cmdline)?;
    arch::boot::configure_system(
        &mem,
        &arch::boot::BootConfig {
            cmdline_addr,
            cmdline_size,
            initrd,
            setup_header: kernel.setup_header,
            acpi_rsdp,
        },
    )
    .map_err(BuildError::BootParams)?;
    // validate() bounded vcpus by MAX_SUPPORTED_CPUS, which fits in a u8.
    let num_vcpus = u8::try_from(config.vcpus).map_err(|_| ConfigError::TooManyVcpus {
        requested: config.vcpus,
        max: limits.max_vcpus,
    })?;
    arch::mptable::setup_mptable(&mem, num_vcpus).map_err(BuildError::MpTable)?;

    let (vcpus, cpuids) = create_vcpus(
        &kvm,
        &vm_fd,
        &mem,
        kernel.entry,
        num_vcpus,
        config.machine.smt,
    )?;
    let cmdline = cmdline
        .as_cstring()
        .map_err(LoaderError::CmdlineInvalid)?
        .into_string()
        .unwrap_or_default();
    info!(
        "booting {:?} kernel {} with {} vCPU(s), {} MiB, final command line: {cmdline}",
        kernel.format,
        kernel_path.display(),
        config.vcpus,
        config.mem_size_mib
    );
    Ok(BuiltVm {
        vm_fd,
        mem,
        pio: Arc::new(devices.pio),
        mmio: Arc::new(devices.mmio),
        legacy: devices.legacy,
        devices: devices.manager,
        console_input: devices.console_input,
        vcpus,
        cpuids,
        cmdline,
        disks: devices.disks,
        nets: devices.nets,
        msr_indices: msr_indices(&kvm)?,
    })
}

/// Every device of a VM, on its buses and registered with KVM.
pub(crate) struct AttachedDevices {
    pub(crate) pio: Bus,
    pub(crate) mmio: Bus,
    pub(crate) legacy: LegacyDevices,
    pub(crate) manager: DeviceManager,
    pub(crate) disks: Vec<Arc<Mutex<Block>>>,
    pub(crate) nets: Vec<Arc<Mutex<Net>>>,
    pub(crate) console_input: ConsoleInput,
}

/// Creates the configured devices, in an order a restore repeats: legacy devices,
/// then disks, network interfaces, entropy and the virtio console, each on the next
/// virtio-mmio slot (announced on `cmdline`).
pub(crate) fn attach_devices(
    config: &VmConfig,
    vm_fd: &VmFd,
    mem: &GuestMemoryMmap,
    cmdline: &mut Cmdline,
) -> Result<AttachedDevices, BuildError> {
    let mut pio = Bus::new();
    let mut mmio = Bus::new();
    let legacy = attach_legacy_devices(vm_fd, &mut pio, serial_output(config)?)?;
    let mut manager = DeviceManager::default();
    let mut virtio = VirtioContext {
        vm_fd,
        mem,
        mmio: &mut mmio,
        cmdline,
        devices: &mut manager,
    };
    metrics().clear_devices();
    let disks = attach_disks(config, &mut virtio)?;
    let nets = attach_nets(config, &mut virtio)?;
    attach_entropy(config, &mut virtio)?;
    let console_input = attach_console(config, &legacy, &mut virtio)?;
    attach_vsock(config, &mut virtio)?;
    Ok(AttachedDevices {
        pio,
        mmio,
        legacy,
        manager,
        disks,
        nets,
        console_input,
    })
}

/// The MSRs a snapshot saves: every one KVM lists.
pub(crate) fn msr_indices(kvm: &Kvm) -> Result<Vec<u32>, BuildError> {
    Ok(kvm
        .get_msr_index_list()
        .map_err(ioctl("KVM_GET_MSR_INDEX_LIST"))?
        .as_slice()
        .to_vec())
}

/// The command line with the root device's `root=` (Firecracker adds it for the
/// drive marked `is_root_device`), unless the user's command line names one.
fn with_root_device(config: &VmConfig) -> String {
    let Some(root) = config.disks.first().filter(|d| d.root) else {
        return config.cmdline.clone();
    };
    if config
        .cmdline
        .split_whitespace()
        .any(|w| w.starts_with("root="))
    {
        return config.cmdline.clone();
    }
    let device = match &root.partuuid {
        Some(uuid) => format!("PARTUUID={uuid}"),
        None => "/dev/vda".to_owned(),
    };
    let mode = if root.read_only { "ro" } else { "rw" };
    format!("{} root={device} {mode}", config.cmdline)
}

/// The serial port writes to stdout (it is the console, or it shows early boot
/// messages before the virtio console takes over), or to `serial_out_path`.
fn serial_output(config: &VmConfig) -> Result<Box<dyn Write + Send>, BuildError> {
    match &config.serial_out {
        None => Ok(Box::new(ConsoleOut)),
        // A file is appended to; a named pipe is opened without waiting for a
        // reader, and a full one loses output instead of stalling the guest.
        Some(path) => crate::logger::Sink::open(path)
            .map(|sink| Box::new(sink.into_file()) as Box<dyn Write + Send>)
            .map_err(|e| BuildError::SerialOut(path.clone(), e.into())),
    }
}

/// What placing a virtio device needs: the VM, its memory, the MMIO bus, the
/// command line that announces devices, and the device manager.
struct VirtioContext<'a> {
    vm_fd: &'a VmFd,
    mem: &'a GuestMemoryMmap,
    mmio: &'a mut Bus,
    cmdline: &'a mut Cmdline,
    devices: &'a mut DeviceManager,
}

impl VirtioContext<'_> {
    fn attach(
        &mut self,
        name: String,
        device: Arc<Mutex<dyn devices::virtio::VirtioDevice>>,
    ) -> Result<(), BuildError> {
        self.devices
            .attach_virtio(name, device, self.vm_fd, self.mem, self.mmio, self.cmdline)?;
        Ok(())
    }
}

fn attach_disks(
    config: &VmConfig,
    virtio: &mut VirtioContext<'_>,
) -> Result<Vec<Arc<Mutex<Block>>>, BuildError> {
    let mut disks = Vec::new();
    for (index, disk) in config.disks.iter().enumerate() {
        let block = Block::new(&BlockConfig {
            path: disk.path.clone(),
            read_only: disk.read_only,
            id: disk.id.clone(),
            cache_type: disk.cache_type,
            rate_limiter: disk.rate_limiter,
        })
        .map_err(|e| BuildError::Disk(disk.path.clone(), e))?;
        let id = crate::api::model::drive_id_of(index, disk);
        metrics().register_counters(format!("block_{id}"), block.metrics());
        let name = format!("disk {} (vd{})", disk.path.display(), disk_letter(index));
        let block = Arc::new(Mutex::new(block));
        virtio.attach(name, block.clone())?;
        disks.push(block);
    }
    Ok(disks)
}

fn attach_nets(
    config: &VmConfig,
    virtio: &mut VirtioContext<'_>,
) -> Result<Vec<Arc<Mutex<Net>>>, BuildError> {
    let mut nets = Vec::new();
    for (index, net) in config.nets.iter().enumerate() {
        let device = Net::new(
            &devices::virtio::net::NetConfig {
                tap: net.tap.clone(),
                mac: net.mac,
                mtu: net.mtu,
                rx_rate_limiter: net.rx_rate_limiter,
                tx_rate_limiter: net.tx_rate_limiter,
            },
            index,
        )
        .map_err(|e| BuildError::Net(net.tap.clone(), e))?;
        let id = crate::api::model::iface_id_of(index, net);
        metrics().register_counters(format!("net_{id}"), device.metrics());
        let name = format!("network interface eth{index} (TAP {})", net.tap);
        let device = Arc::new(Mutex::new(device));
        virtio.attach(name, device.clone())?;
        nets.push(device);
    }
    Ok(nets)
}

fn attach_entropy(config: &VmConfig, virtio: &mut VirtioContext<'_>) -> Result<(), BuildError> {
    let Some(entropy) = &config.entropy else {
        return Ok(());
    };
    let rng = Rng::new(entropy.rate_limiter).map_err(BuildError::Entropy)?;
    metrics().register_counters("entropy".to_owned(), rng.metrics());
    virtio.attach(
        "entropy device (virtio-rng)".to_owned(),
        Arc::new(Mutex::new(rng)),
    )
}

fn attach_vsock(config: &VmConfig, virtio: &mut VirtioContext<'_>) -> Result<(), BuildError> {
    let Some(vsock) = &config.vsock else {
        return Ok(());
    };
    let device = Vsock::new(&VsockDeviceConfig {
        guest_cid: u64::from(vsock.guest_cid),
        uds_path: vsock.uds_path.clone(),
    })
    .map_err(BuildError::Vsock)?;
    metrics().register_counters("vsock".to_owned(), device.metrics());
    virtio.attach(
        format!("vsock device (virtio-vsock, CID {})", vsock.guest_cid),
        Arc::new(Mutex::new(device)),
    )
}

/// vda, vdb, ..., vdz, vdaa, ... like the guest's virtio_blk names them.
fn disk_letter(index: usize) -> String {
    let mut name = String::new();
    let mut n = index;
    loop {
        name.insert(0, char::from(b'a' + (n % 26) as u8));
        if n < 26 {
            return name;
        }
        n = n / 26 - 1;
    }
}

fn attach_console(
    config: &VmConfig,
    legacy: &LegacyDevices,
    virtio: &mut VirtioContext<'_>,
) -> Result<ConsoleInput, BuildError> {
    match config.console {
        ConsoleKind::Serial => Ok(ConsoleInput::new(
            ConsoleDevice::Serial(legacy.serial.clone()),
            legacy
                .serial_input_room
                .try_clone()
                .map_err(BuildError::EventFd)?,
            libc::STDIN_FILENO,
        )),
        ConsoleKind::Virtio => {
            let room = EventFd::new(EFD_NONBLOCK).map_err(BuildError::EventFd)?;
            let console = Console::new(
                Box::new(ConsoleOut),
                room.try_clone().map_err(BuildError::EventFd)?,
            );
            let console = Arc::new(Mutex::new(console));
            virtio.attach("virtio console".into(), console.clone())?;
            Ok(ConsoleInput::new(
                ConsoleDevice::Virtio(console),
                room,
                libc::STDIN_FILENO,
            ))
        }
    }
}

/// ACPI tables for `vcpus` vCPUs and the virtio devices placed so far, in order.
fn write_acpi_tables(
    mem: &GuestMemoryMmap,
    vcpus: u32,
    devices: &DeviceManager,
) -> Result<GuestAddress, BuildError> {
    let windows: Vec<_> = devices
        .slots
        .iter()
        .map(|slot| arch::acpi::MmioDevice {
            addr: slot.addr,
            len: layout::VIRTIO_MMIO_SIZE,
            gsi: slot.irq,
        })
        .collect();
    let vcpus = usize::try_from(vcpus).unwrap_or(usize::MAX);
    arch::acpi::setup_acpi(mem, vcpus, &windows).map_err(BuildError::Acpi)
}

/// What this host allows: KVM's vCPU limit (capped by xAPIC ids) and its memory.
pub fn host_limits(kvm: &Kvm) -> Result<HostLimits, BuildError> {
    let kvm_max = u32::try_from(kvm.get_max_vcpus()).unwrap_or(u32::MAX);
    Ok(HostLimits {
        max_vcpus: kvm_max.min(u32::from(arch::mptable::MPTABLE_MAX_CPUS)),
        mem_total_bytes: host_mem_total_bytes().map_err(BuildError::HostMemory)?,
    })
}

pub(crate) fn create_vm(kvm: &Kvm) -> Result<VmFd, BuildError> {
    let vm_fd = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
    vm_fd
        .set_tss_address(layout::KVM_TSS_ADDRESS as usize)
        .map_err(ioctl("KVM_SET_TSS_ADDR"))?;
    vm_fd
        .create_irq_chip()
        .map_err(ioctl("KVM_CREATE_IRQCHIP"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm_fd.create_pit2(pit).map_err(ioctl("KVM_CREATE_PIT2"))?;
    Ok(vm_fd)
}

fn create_guest_memory(config: &VmConfig) -> Result<GuestMemoryMmap, BuildError> {
    let regions = arch::arch_memory_regions(config.mem_size_bytes());
    if config.machine.huge_pages == HugePages::None {
        return GuestMemoryMmap::from_ranges(&regions)
            .map_err(|e| BuildError::GuestMemory(config.mem_size_mib, e));
    }
    // Without MAP_NORESERVE the kernel reserves every huge page at mmap, so a host
    // without enough of them fails here, not with a SIGBUS when the guest first
    // touches a page.
    let huge = |e: std::io::Error| BuildError::HugePages(config.mem_size_mib, e);
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB | libc::MAP_HUGE_2MB;
    let mapped = regions
        .iter()
        .map(|&(start, size)| {
            let region = MmapRegionBuilder::new(size)
                .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                .with_mmap_flags(flags)
                .build()
                .map_err(|e| huge(std::io::Error::other(e.to_string())))?;
            GuestRegionMmap::new(region, start)
                .ok_or_else(|| huge(std::io::Error::other("region past the address space")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    GuestMemoryMmap::from_regions(mapped).map_err(|e| huge(std::io::Error::other(e.to_string())))
}

pub(crate) fn register_guest_memory(
    vm_fd: &VmFd,
    mem: &GuestMemoryMmap,
    track_dirty_pages: bool,
) -> Result<(), BuildError> {
    let flags = if track_dirty_pages {
        KVM_MEM_LOG_DIRTY_PAGES
    } else {
        0
    };
    for (slot, region) in mem.iter().enumerate() {
        let host_addr = mem.get_host_address(region.start_addr()).map_err(|_| {
            BuildError::KvmIoctl(
                "KVM_SET_USER_MEMORY_REGION",
                kvm_ioctls::Error::new(libc::EFAULT),
            )
        })?;
        let region_desc = kvm_userspace_memory_region {
            slot: u32::try_from(slot).unwrap_or(u32::MAX),
            flags,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host_addr as u64,
        };
        // SAFETY: the host range [host_addr, host_addr + len) is a live mapping owned
        // by `mem`, and `mem` outlives the VM: BuiltVm keeps both and drops the VmFd
        // (and so the memory slots) no later than the mapping.
        unsafe { vm_fd.set_user_memory_region(region_desc) }
            .map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
}

fn attach_legacy_devices(
    vm_fd: &VmFd,
    pio: &mut Bus,
    console: Box<dyn Write + Send>,
) -> Result<LegacyDevices, BuildError> {
    let new_evt = || EventFd::new(EFD_NONBLOCK).map_err(BuildError::EventFd);

    let serial_irq = new_evt()?;
    vm_fd
        .register_irqfd(&serial_irq, layout::SERIAL_COM1_IRQ)
        .map_err(ioctl("KVM_IRQFD (serial)"))?;
    let serial_input_room = new_evt()?;
    let serial = Serial::new(
        serial_irq,
        serial_input_room.try_clone().map_err(BuildError::EventFd)?,
        console,
    )
    .map_err(|e| BuildError::Device("serial", e))?;
    let serial = Arc::new(Mutex::new(serial));
    pio.insert(
        serial.clone(),
        u64::from(layout::SERIAL_COM1_PORT),
        u64::from(layout::SERIAL_COM1_PORT_LEN),
    )
    .map_err(|e| BuildError::Bus("serial", e))?;

    let guest_stop = Arc::new(AtomicBool::new(false));
    let stop_signal = |evt: &EventFd| -> Result<MachineStop, BuildError> {
        let evt = evt.try_clone().map_err(BuildError::EventFd)?;
        Ok(MachineStop::new(evt, guest_stop.clone()))
    };
    let reset_evt = new_evt()?;
    let kbd_irq = new_evt()?;
    vm_fd
        .register_irqfd(&kbd_irq, layout::I8042_IRQ)
        .map_err(ioctl("KVM_IRQFD (i8042)"))?;
    let i8042 = Arc::new(Mutex::new(
        I8042::new(stop_signal(&reset_evt)?, kbd_irq)
            .map_err(|e| BuildError::Device("i8042", e))?,
    ));
    pio.insert(
        i8042.clone(),
        u64::from(layout::I8042_PORT),
        u64::from(layout::I8042_PORT_LEN),
    )
    .map_err(|e| BuildError::Bus("i8042", e))?;

    let poweroff_evt = new_evt()?;
    let ged_irq = new_evt()?;
    vm_fd
        .register_irqfd(&ged_irq, layout::ACPI_GED_IRQ)
        .map_err(ioctl("KVM_IRQFD (ACPI GED)"))?;
    let acpi_pm = Arc::new(Mutex::new(AcpiPm::new(
        stop_signal(&poweroff_evt)?,
        ged_irq,
    )));
    pio.insert(
        acpi_pm.clone(),
        u64::from(layout::ACPI_PM_PORT),
        u64::from(layout::ACPI_PM_PORT_LEN),
    )
    .map_err(|e| BuildError::Bus("ACPI power management", e))?;

    pio.insert(
        Arc::new(Mutex::new(PciHostBridge::new())),
        u64::from(layout::PCI_CONFIG_PORT),
        devices::legacy::pci_host::PORT_LEN,
    )
    .map_err(|e| BuildError::Bus("PCI host bridge", e))?;

    Ok(LegacyDevices {
        serial,
        serial_input_room,
        i8042,
        reset_evt,
        acpi_pm,
        poweroff_evt,
        guest_stop,
    })
}

fn create_vcpus(
    kvm: &Kvm,
    vm_fd: &VmFd,
    mem: &GuestMemoryMmap,
    entry: GuestAddress,
    num_vcpus: u8,
    smt: bool,
) -> Result<(Vec<VcpuFd>, Vec<Vec<kvm_bindings::kvm_cpuid_entry2>>), BuildError> {
    let mut base_cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?;
    if kvm.check_extension(Cap::TscDeadlineTimer) {
        arch::cpuid::enable_tsc_deadline(&mut base_cpuid);
    }
    (0..num_vcpus)
        .map(|index| {
            let fd = vm_fd
                .create_vcpu(u64::from(index))
                .map_err(ioctl("KVM_CREATE_VCPU"))?;
            let cpuid = configure_vcpu(&fd, &base_cpuid, mem, entry, (index, num_vcpus, smt))?;
            Ok((fd, cpuid))
        })
        .collect::<Result<Vec<_>, BuildError>>()
        .map(|pairs| pairs.into_iter().unzip())
}

fn configure_vcpu(
    fd: &VcpuFd,
    base_cpuid: &CpuId,
    mem: &GuestMemoryMmap,
    entry: GuestAddress,
    (index, num_vcpus, smt): (u8, u8, bool),
) -> Result<Vec<kvm_bindings::kvm_cpuid_entry2>, BuildError> {
    let mut cpuid = base_cpuid.clone();
    arch::cpuid::setup_cpuid(&mut cpuid, index, num_vcpus, smt)
        .map_err(|e| BuildError::Cpuid(u32::from(index), e))?;
    fd.set_cpuid2(&cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;

    let entries = arch::msr::boot_msr_entries();
    let msrs = Msrs::from_entries(&entries).map_err(|_| BuildError::Msrs {
        set: 0,
        wanted: entries.len(),
    })?;
    let set = fd.set_msrs(&msrs).map_err(ioctl("KVM_SET_MSRS"))?;
    if set != entries.len() {
        return Err(BuildError::Msrs {
            set,
            wanted: entries.len(),
        });
    }

    fd.set_regs(&arch::regs::boot_regs(entry))
        .map_err(ioctl("KVM_SET_REGS"))?;
    let mut sregs = fd.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
    arch::regs::setup_sregs(mem, &mut sregs).map_err(BuildError::Sregs)?;
    fd.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))?;
    fd.set_fpu(&arch::regs::boot_fpu())
        .map_err(ioctl("KVM_SET_FPU"))?;
    let mut lapic = fd.get_lapic().map_err(ioctl("KVM_GET_LAPIC"))?;
    arch::interrupts::set_lint(&mut lapic);
    fd.set_lapic(&lapic).map_err(ioctl("KVM_SET_LAPIC"))?;
    Ok(cpuid.as_slice().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DiskConfig;

    #[test]
    fn with_root_device_adds_root_unless_the_command_line_has_one() {
        let root = |partuuid: Option<&str>, read_only| DiskConfig {
            root: true,
            read_only,
            partuuid: partuuid.map(str::to_owned),
            ..DiskConfig::default()
        };
        let mut config = VmConfig {
            cmdline: "console=ttyS0".into(),
            disks: vec![root(None, false)],
            ..VmConfig::default()
        };
        assert_eq!(with_root_device(&config), "console=ttyS0 root=/dev/vda rw");
        config.disks = vec![root(Some("abcd1234-01"), true)];
        assert_eq!(
            with_root_device(&config),
            "console=ttyS0 root=PARTUUID=abcd1234-01 ro"
        );
        config.cmdline = "console=ttyS0 root=/dev/vdb".into();
        assert_eq!(with_root_device(&config), "console=ttyS0 root=/dev/vdb");
        config.disks[0].root = false;
        config.cmdline = "console=ttyS0".into();
        assert_eq!(with_root_device(&config), "console=ttyS0");
    }

    #[test]
    fn acpi_tables_and_power_device_agree_on_the_registers() {
        use arch::acpi as tables;
        use devices::legacy::acpi_pm as device;
        assert_eq!(
            u64::from(tables::SLEEP_CONTROL_OFFSET),
            device::SLEEP_CONTROL
        );
        assert_eq!(u64::from(tables::SLEEP_STATUS_OFFSET), device::SLEEP_STATUS);
        assert_eq!(u64::from(tables::GED_EVENT_OFFSET), device::GED_EVENTS);
        assert_eq!(tables::SLEEP_TYPE_S5, device::SLEEP_TYPE_S5);
        assert_eq!(tables::SLEEP_ENABLE, device::SLEEP_ENABLE);
        assert_eq!(tables::GED_EVENT_POWER_BUTTON, device::EVENT_POWER_BUTTON);
        const { assert!(tables::GED_EVENT_OFFSET < arch::layout::ACPI_PM_PORT_LEN) };
    }

    #[test]
    fn disk_letter_follows_guest_naming() {
        assert_eq!(disk_letter(0), "a");
        assert_eq!(disk_letter(25), "z");
        assert_eq!(disk_letter(26), "aa");
        assert_eq!(disk_letter(27), "ab");
    }
}
