//! A VM whose vCPU threads run: their handles and controls, and the descriptors
//! (queue notifications, device events, reset and power-off) the event loop watches.

use std::os::fd::RawFd;
use std::os::unix::thread::JoinHandleExt;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use devices::legacy::{AcpiPm, Serial, I8042};
use devices::virtio::mmio::MmioTransport;
use devices::GuestMemoryMmap;
use event_manager::{EventOps, Events};
use log::warn;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::{lock, RunError, PAUSE_TIMEOUT};
use crate::builder::BuiltVm;
use crate::config::VmConfig;
use crate::console_input::ConsoleInput;
use crate::seccomp::{Filters, ThreadKind};
use crate::snapshot::cpu::VmState as KvmVmState;
use crate::snapshot::memory::MemoryLayout;
use crate::snapshot::Snapshot;
use crate::vcpu::{self, VcpuControl, VcpuStopped, VcpuThread};

/// One queue notification eventfd the event loop watches.
pub(super) struct QueueEvent {
    pub(super) evt: EventFd,
    pub(super) transport: Arc<Mutex<MmioTransport>>,
    pub(super) queue: usize,
}

/// A host descriptor a device asked the event loop to watch (e.g. a TAP).
pub(super) struct DeviceEvent {
    pub(super) fd: RawFd,
    pub(super) token: u32,
    pub(super) transport: Arc<Mutex<MmioTransport>>,
}

fn device_events(vm: &BuiltVm) -> Vec<DeviceEvent> {
    let mut events = Vec::new();
    for slot in &vm.devices.slots {
        let device = lock(&slot.transport).device();
        let fds = lock(&device).event_fds();
        for (fd, token) in fds {
            events.push(DeviceEvent {
                fd,
                token,
                transport: slot.transport.clone(),
            });
        }
    }
    events
}

/// A VM whose vCPU threads are running (or paused).
pub(super) struct RunningVm {
    pub(super) console_input: ConsoleInput,
    pub(super) queue_evts: Vec<QueueEvent>,
    pub(super) device_evts: Vec<DeviceEvent>,
    /// Queue notifications that arrived while paused, processed on resume.
    pub(super) deferred: Vec<usize>,
    /// Device events that arrived while paused, processed on resume.
    pub(super) deferred_devices: Vec<usize>,
    pub(super) reset_evt: EventFd,
    pub(super) poweroff_evt: EventFd,
    pub(super) serial: Arc<Mutex<Serial>>,
    pub(super) i8042: Arc<Mutex<I8042>>,
    pub(super) acpi_pm: Arc<Mutex<AcpiPm>>,
    /// Every virtio-mmio transport, in slot order.
    pub(super) transports: Vec<Arc<Mutex<MmioTransport>>>,
    pub(super) control: Arc<VcpuControl>,
    threads: Vec<JoinHandle<()>>,
    /// Block devices, in `config.disks` order.
    pub(super) disks: Vec<Arc<Mutex<devices::virtio::block::Block>>>,
    /// Network devices, in `config.nets` order.
    pub(super) nets: Vec<Arc<Mutex<devices::virtio::net::Net>>>,
    /// Kept alive while vCPUs run: the memory slots point into it.
    pub(super) mem: GuestMemoryMmap,
    pub(super) vm_fd: kvm_ioctls::VmFd,
}

/// How a VM's vCPUs start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Start {
    /// A cold boot: they run at once.
    Boot,
    /// A restored VM: parked, until resumed; every queue is looked at on resume
    /// (notifications the guest made before the snapshot were not yet served).
    Restored,
}

impl RunningVm {
    pub(super) fn start(
        vm: BuiltVm,
        events: &Sender<VcpuStopped>,
        exit_evt: &EventFd,
        seccomp: Option<&Filters>,
        how: Start,
    ) -> Result<Self, RunError> {
        let queue_evts = queue_events(&vm)?;
        let device_evts = device_events(&vm);
        let control = Arc::new(VcpuControl::new(vm.legacy.guest_stop.clone()));
        let deferred = match how {
            Start::Boot => Vec::new(),
            Start::Restored => {
                control.request_pause();
                (0..queue_evts.len()).collect()
            }
        };
        let transports = vm
            .devices
            .slots
            .iter()
            .map(|slot| slot.transport.clone())
            .collect();
        let msr_indices = Arc::new(vm.msr_indices);
        let mut running = RunningVm {
            console_input: vm.console_input,
            queue_evts,
            device_evts,
            deferred,
            deferred_devices: Vec::new(),
            reset_evt: vm.legacy.reset_evt,
            poweroff_evt: vm.legacy.poweroff_evt,
            serial: vm.legacy.serial,
            i8042: vm.legacy.i8042,
            acpi_pm: vm.legacy.acpi_pm,
            transports,
            control: control.clone(),
            threads: Vec::new(),
            disks: vm.disks,
            nets: vm.nets,
            mem: vm.mem,
            vm_fd: vm.vm_fd,
        };
        let vcpu_count = vm.vcpus.len();
        for (index, (fd, cpuid)) in vm.vcpus.into_iter().zip(vm.cpuids).enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            let thread = VcpuThread {
                index,
                fd,
                pio: vm.pio.clone(),
                mmio: vm.mmio.clone(),
                control: control.clone(),
                vcpu_count,
                events: events.clone(),
                exit_evt: exit_evt
                    .try_clone()
                    .map_err(|e| RunError::Setup("the exit eventfd", e))?,
                seccomp: seccomp.map(|f| f.program(ThreadKind::Vcpu)),
                msr_indices: msr_indices.clone(),
                cpuid,
            };
            let spawned = thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || thread.run());
            match spawned {
                Ok(handle) => running.threads.push(handle),
                Err(e) => {
                    running.stop_vcpus();
                    return Err(RunError::Thread(index, e));
                }
            }
        }
        Ok(running)
    }

    pub(super) fn kick_vcpus(&self) {
        for handle in &self.threads {
            // SAFETY: the pthread_t belongs to a thread we spawned and have not joined,
            // so it is valid; the kick signal's handler only sets immediate_exit on
            // that thread's own kvm_run page.
            unsafe { libc::pthread_kill(handle.as_pthread_t(), vcpu::kick_signal()) };
        }
    }

    /// Parks every vCPU outside KVM_RUN.
    pub(super) fn pause(&mut self) -> Result<(), String> {
        self.control.request_pause();
        self.kick_vcpus();
        if self.control.wait_parked(self.threads.len(), PAUSE_TIMEOUT) {
            Ok(())
        } else {
            self.control.resume();
            Err(format!("vCPUs did not park within {PAUSE_TIMEOUT:?}"))
        }
    }

    /// The paused VM's state, everything but its RAM: each parked vCPU reads its own.
    pub(super) fn snapshot(&self, config: &VmConfig) -> Result<Snapshot, String> {
        let vcpus = self
            .control
            .save_parked(self.threads.len(), PAUSE_TIMEOUT)?;
        let vm = KvmVmState::save(&self.vm_fd).map_err(|e| crate::error_chain(&e))?;
        Ok(Snapshot {
            config: config.clone(),
            memory: MemoryLayout::of(&self.mem),
            vm,
            vcpus,
            serial: lock(&self.serial).save(),
            i8042: lock(&self.i8042).save(),
            acpi_pm: lock(&self.acpi_pm).save(),
            devices: self.transports.iter().map(|t| lock(t).save()).collect(),
        })
    }

    /// Lets the vCPUs run again and serves what arrived meanwhile; `ops` is the
    /// event loop's (None before it runs, when no device event can be deferred).
    pub(super) fn resume(&mut self, mut ops: Option<&mut EventOps>) {
        self.control.resume();
        for index in std::mem::take(&mut self.deferred) {
            if let Some(q) = self.queue_evts.get(index) {
                lock(&q.transport).process_queue(q.queue);
            }
        }
        for index in std::mem::take(&mut self.deferred_devices) {
            if let Some(d) = self.device_evts.get(index) {
                d.process();
                let watched = ops
                    .as_mut()
                    .is_some_and(|ops| ops.add(Events::new_raw(d.fd, EventSet::IN)).is_ok());
                if !watched {
                    warn!("cannot watch a device again after resume");
                }
            }
        }
    }

    /// Asks every vCPU to leave KVM_RUN and waits for its thread.
    pub(super) fn stop_vcpus(&mut self) {
        self.control.request_stop();
        self.kick_vcpus();
        for handle in self.threads.drain(..) {
            if handle.join().is_err() {
                warn!("a vCPU thread panicked");
            }
        }
    }
}

impl DeviceEvent {
    pub(super) fn process(&self) {
        let device = lock(&self.transport).device();
        lock(&device).process_event(self.token);
    }
}

fn queue_events(vm: &BuiltVm) -> Result<Vec<QueueEvent>, RunError> {
    let mut events = Vec::new();
    for slot in &vm.devices.slots {
        let transport = lock(&slot.transport);
        for (queue, evt) in transport.queue_evts().iter().enumerate() {
            events.push(QueueEvent {
                evt: evt
                    .try_clone()
                    .map_err(|e| RunError::Setup("queue notifications", e))?,
                transport: slot.transport.clone(),
                queue,
            });
        }
    }
    Ok(events)
}
