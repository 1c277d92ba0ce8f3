//! vCPU exits as a pure function, and the thread that runs one vCPU.

use std::cell::Cell;
use std::fmt;

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use devices::bus::Bus;
use kvm_bindings::{
    kvm_run, KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_UNINITIALIZED,
    KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use log::{warn, Level};
use vmm_sys_util::eventfd::EventFd;

use crate::metrics::{metrics, ExitReason};
use crate::seccomp::ThreadFilter;
use crate::snapshot::cpu::VcpuState;

mod control;

pub use control::VcpuControl;

/// What an access to a port or address that no device claims reads as.
pub const UNCLAIMED_READ_BYTE: u8 = 0xff;

/// Why a VM stopped running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest asked for a reset (i8042 or a system event): a clean reboot.
    GuestReset,
    /// The guest powered itself off.
    GuestShutdown,
    /// A triple fault (KVM_EXIT_SHUTDOWN).
    TripleFault {
        /// vCPU index.
        vcpu: u32,
        /// Instruction pointer at the time, if it could be read.
        rip: Option<u64>,
    },
    /// KVM could not run the guest's instruction (KVM_EXIT_INTERNAL_ERROR).
    InternalError {
        /// vCPU index.
        vcpu: u32,
        /// KVM's suberror (1 = emulation failure).
        suberror: u32,
        /// Instruction pointer.
        rip: Option<u64>,
    },
    /// VM entry failed (KVM_EXIT_FAIL_ENTRY).
    FailEntry {
        /// vCPU index.
        vcpu: u32,
        /// Hardware entry failure reason.
        reason: u64,
        /// Instruction pointer.
        rip: Option<u64>,
    },
    /// An exit cabin does not handle.
    UnexpectedExit {
        /// vCPU index.
        vcpu: u32,
        /// Exit name.
        exit: String,
        /// Instruction pointer.
        rip: Option<u64>,
    },
    /// KVM_RUN itself failed.
    RunFailed {
        /// vCPU index.
        vcpu: u32,
        /// errno.
        errno: i32,
    },
    /// cabin received a signal.
    Signal(i32),
    /// The guest did not power off within this long after the power button.
    ShutdownTimedOut(Duration),
    /// Every vCPU halted with interrupts off: the guest stopped for good (`halt`,
    /// or `poweroff` without ACPI).
    GuestHalted,
    /// A vCPU thread could not install its seccomp filter.
    SeccompFailed {
        /// vCPU index.
        vcpu: u32,
        /// Why, with its causes.
        message: String,
    },
}

impl StopReason {
    /// Whether this is an orderly end (exit status 0).
    pub fn is_clean(&self) -> bool {
        matches!(self, StopReason::GuestReset | StopReason::GuestShutdown)
    }

    fn with_rip(self, rip: Option<u64>) -> Self {
        match self {
            StopReason::TripleFault { vcpu, .. } => StopReason::TripleFault { vcpu, rip },
            StopReason::InternalError { vcpu, suberror, .. } => StopReason::InternalError {
                vcpu,
                suberror,
                rip,
            },
            StopReason::FailEntry { vcpu, reason, .. } => {
                StopReason::FailEntry { vcpu, reason, rip }
            }
            StopReason::UnexpectedExit { vcpu, exit, .. } => {
                StopReason::UnexpectedExit { vcpu, exit, rip }
            }
            other => other,
        }
    }
}

struct Rip(Option<u64>);

impl fmt::Display for Rip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(rip) => write!(f, "RIP {rip:#x}"),
            None => write!(f, "RIP unknown"),
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::GuestReset => write!(f, "guest rebooted"),
            StopReason::GuestShutdown => write!(f, "guest powered off"),
            StopReason::TripleFault { vcpu, rip } => {
                write!(f, "guest triple fault on vCPU {vcpu} (KVM_EXIT_SHUTDOWN) at {}", Rip(*rip))
            }
            StopReason::InternalError {
                vcpu,
                suberror,
                rip,
            } => write!(
                f,
                "KVM internal error on vCPU {vcpu} (KVM_EXIT_INTERNAL_ERROR, suberror {suberror}{}) at {}",
                if *suberror == kvm_bindings::KVM_INTERNAL_ERROR_EMULATION {
                    ": instruction emulation failed"
                } else {
                    ""
                },
                Rip(*rip)
            ),
            StopReason::FailEntry { vcpu, reason, rip } => write!(
                f,
                "VM entry failed on vCPU {vcpu} (KVM_EXIT_FAIL_ENTRY, hardware reason {reason:#x}) at {}",
                Rip(*rip)
            ),
            StopReason::UnexpectedExit { vcpu, exit, rip } => {
                write!(f, "unexpected vCPU exit {exit} on vCPU {vcpu} at {}", Rip(*rip))
            }
            StopReason::RunFailed { vcpu, errno } => write!(
                f,
                "KVM_RUN failed on vCPU {vcpu}: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            StopReason::Signal(sig) => write!(f, "stopped by signal {sig}"),
            StopReason::GuestHalted => write!(
                f,
                "the guest halted: every vCPU stopped with interrupts off (halt, or poweroff without ACPI)"
            ),
            StopReason::ShutdownTimedOut(after) => write!(
                f,
                "the guest did not power off within {} s of the power button; stopped it",
                after.as_secs()
            ),
            StopReason::SeccompFailed { vcpu, message } => {
                write!(f, "vCPU {vcpu} did not start: {message}")
            }
        }
    }
}

/// What the run loop does after an exit.
#[derive(Debug, PartialEq, Eq)]
pub enum ExitAction {
    /// Enter the guest again.
    Continue,
    /// Stop this vCPU and the VM.
    Stop(StopReason),
}

/// Handles one vCPU exit: port and MMIO accesses go to the buses, everything else
/// decides whether the VM goes on. Pure apart from the device accesses and the exit
/// counter in the metrics, so it is tested with fabricated exits.
pub fn handle_exit(vcpu: u32, pio: &Bus, mmio: &Bus, exit: VcpuExit) -> ExitAction {
    handle_exit_sized(vcpu, pio, mmio, exit, usize::MAX)
}

/// [`handle_exit`] for a port access whose elements are `io_size` bytes each.
///
/// A string instruction (`rep ins`/`rep outs`) reaches user space as one exit with
/// all its elements in one buffer; each element is its own access to the port,
/// as on hardware (four `insb` from a status register read it four times).
pub fn handle_exit_sized(
    vcpu: u32,
    pio: &Bus,
    mmio: &Bus,
    exit: VcpuExit,
    io_size: usize,
) -> ExitAction {
    metrics().vcpu_exit(ExitReason::from(&exit));
    let io_size = io_size.max(1);
    match exit {
        VcpuExit::IoIn(port, data) => {
            for element in data.chunks_mut(io_size) {
                if !pio.read(u64::from(port), element) {
                    element.fill(UNCLAIMED_READ_BYTE);
                }
            }
            ExitAction::Continue
        }
        VcpuExit::IoOut(port, data) => {
            for element in data.chunks(io_size) {
                if !pio.write(u64::from(port), element) {
                    devices::log_ratelimited!(
                        Level::Debug,
                        "vCPU {vcpu}: write to unclaimed port {port:#x}"
                    );
                }
            }
            ExitAction::Continue
        }
        VcpuExit::MmioRead(addr, data) => {
            if !mmio.read(addr, data) {
                devices::log_ratelimited!(
                    Level::Debug,
                    "vCPU {vcpu}: read of unclaimed MMIO address {addr:#x}"
                );
                data.fill(UNCLAIMED_READ_BYTE);
            }
            ExitAction::Continue
        }
        VcpuExit::MmioWrite(addr, data) => {
            if !mmio.write(addr, data) {
                devices::log_ratelimited!(
                    Level::Debug,
                    "vCPU {vcpu}: write to unclaimed MMIO address {addr:#x}"
                );
            }
            ExitAction::Continue
        }
        // With the in-kernel irqchip these should not reach user space; if they do,
        // entering the guest again is the right answer.
        VcpuExit::Hlt | VcpuExit::IrqWindowOpen | VcpuExit::Intr | VcpuExit::IoapicEoi(_) => {
            ExitAction::Continue
        }
        VcpuExit::Shutdown => ExitAction::Stop(StopReason::TripleFault { vcpu, rip: None }),
        VcpuExit::SystemEvent(kind, _) => match kind {
            KVM_SYSTEM_EVENT_RESET => ExitAction::Stop(StopReason::GuestReset),
            KVM_SYSTEM_EVENT_SHUTDOWN => ExitAction::Stop(StopReason::GuestShutdown),
            other => {
                warn!("vCPU {vcpu}: ignoring system event {other}");
                ExitAction::Continue
            }
        },
        VcpuExit::InternalError => ExitAction::Stop(StopReason::InternalError {
            vcpu,
            suberror: 0,
            rip: None,
        }),
        VcpuExit::FailEntry(reason, _cpu) => ExitAction::Stop(StopReason::FailEntry {
            vcpu,
            reason,
            rip: None,
        }),
        other => ExitAction::Stop(StopReason::UnexpectedExit {
            vcpu,
            exit: format!("{other:?}"),
            rip: None,
        }),
    }
}

/// Bytes per element of the port access this thread's vCPU last exited for.
fn exit_io_size() -> usize {
    let run = KVM_RUN_PTR.with(Cell::get);
    if run.is_null() {
        return usize::MAX;
    }
    // SAFETY: `run` is this thread's vCPU's kvm_run mapping, set by VcpuThread::run
    // before its loop and valid until it returns. The union member read is a plain
    // u8 (any value is valid; it is only used after a KVM_EXIT_IO, which wrote
    // it), and no live reference covers it: the exit's data slice lies past the
    // structure, at `io.data_offset`.
    unsafe { usize::from(std::ptr::addr_of!((*run).__bindgen_anon_1.io.size).read()) }
}

/// RFLAGS.IF: maskable interrupts enabled.
const RFLAGS_IF: u64 = 1 << 9;

/// Real-time signal used to kick vCPU threads out of KVM_RUN.
pub fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

thread_local! {
    /// The `kvm_run` page of the vCPU this thread runs, for the kick signal handler.
    static KVM_RUN_PTR: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    KVM_RUN_PTR.with(|ptr| {
        let run = ptr.get();
        if !run.is_null() {
            // SAFETY: the pointer was set by `VcpuThread::run` on this very thread from
            // its `VcpuFd`'s mmapped kvm_run page, and is cleared before that VcpuFd is
            // dropped; the handler runs on the same thread, so the page is mapped.
            // `immediate_exit` is a plain byte KVM reads on the next KVM_RUN.
            unsafe { (*run).immediate_exit = 1 };
        }
    });
}

/// Installs the kick handler once per process.
pub fn register_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), handle_kick)
}

/// Messages from vCPU threads to the VMM thread.
#[derive(Debug)]
pub struct VcpuStopped(pub StopReason);

/// One vCPU and what it needs to run on its own thread.
pub struct VcpuThread {
    /// vCPU index.
    pub index: u32,
    /// The KVM vCPU.
    pub fd: VcpuFd,
    /// Port I/O devices.
    pub pio: Arc<Bus>,
    /// MMIO devices.
    pub mmio: Arc<Bus>,
    /// Stop and pause requests from the VMM.
    pub control: Arc<VcpuControl>,
    /// How many vCPUs the VM has (for the halt check).
    pub vcpu_count: usize,
    /// Where the reason a vCPU stopped goes.
    pub events: Sender<VcpuStopped>,
    /// Written after sending on `events`, to wake the event loop.
    pub exit_evt: EventFd,
    /// The vCPU seccomp filter, installed before the run loop (`None`: off).
    pub seccomp: Option<ThreadFilter>,
    /// The MSRs a snapshot saves.
    pub msr_indices: Arc<Vec<u32>>,
    /// The CPUID cabin gave this vCPU (a snapshot saves it).
    pub cpuid: Vec<kvm_bindings::kvm_cpuid_entry2>,
}

impl fmt::Debug for VcpuThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VcpuThread")
            .field("index", &self.index)
            .finish()
    }
}

/// Lets KVM finish the instruction of the last exit before the vCPU's state is read.
///
/// After a port or MMIO read exit, KVM writes the value into the guest's register and
/// moves RIP past the instruction only on the next KVM_RUN. Read between the two, the
/// state would replay the instruction on restore: a second read of a register that
/// changes when read (a UART's interrupt identification: the guest would miss its
/// transmit interrupt and never print again), or a second write. KVM_RUN with
/// `immediate_exit` completes that instruction and returns before running the guest;
/// a string instruction may need more of its elements served first.
fn finish_pending_io(fd: &mut VcpuFd, index: u32, pio: &Bus, mmio: &Bus) -> Result<(), String> {
    const MAX_ROUNDS: usize = 64;
    for _ in 0..MAX_ROUNDS {
        fd.set_kvm_immediate_exit(1);
        let action = match fd.run() {
            Ok(exit) => {
                let io_size = exit_io_size();
                handle_exit_sized(index, pio, mmio, exit, io_size)
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                fd.set_kvm_immediate_exit(0);
                return Ok(());
            }
            Err(e) => {
                fd.set_kvm_immediate_exit(0);
                return Err(format!(
                    "KVM_RUN to finish the pending instruction failed: {e}"
                ));
            }
        };
        if let ExitAction::Stop(reason) = action {
            fd.set_kvm_immediate_exit(0);
            return Err(format!("the pending instruction stopped the VM: {reason}"));
        }
    }
    fd.set_kvm_immediate_exit(0);
    Err(format!(
        "the pending instruction needed more than {MAX_ROUNDS} exits"
    ))
}

impl VcpuThread {
    /// Runs the vCPU until the guest stops it or the VMM asks it to leave.
    pub fn run(mut self) {
        let run_ptr: *mut kvm_run = self.fd.get_kvm_run();
        KVM_RUN_PTR.with(|ptr| ptr.set(run_ptr));
        // Every setup ioctl of this vCPU ran in the builder; from here on it only
        // runs the guest and serves its exits.
        let confined = self.seccomp.as_ref().map_or(Ok(()), ThreadFilter::apply);
        let reason = match confined {
            Ok(()) => self.run_loop(),
            Err(e) => Some(StopReason::SeccompFailed {
                vcpu: self.index,
                message: crate::error_chain(&e),
            }),
        };
        KVM_RUN_PTR.with(|ptr| ptr.set(std::ptr::null_mut()));
        if let Some(reason) = reason {
            // The receiver only goes away when the VMM is already stopping.
            let _ = self.events.send(VcpuStopped(reason));
            let _ = self.exit_evt.write(1);
        }
    }

    fn run_loop(&mut self) -> Option<StopReason> {
        let mut halt_round = self.control.halt_round();
        let index = usize::try_from(self.index).unwrap_or(usize::MAX);
        loop {
            let (fd, msrs, cpuid) = (&mut self.fd, &self.msr_indices, &self.cpuid);
            let (vcpu, pio, mmio) = (self.index, &self.pio, &self.mmio);
            let mut save = || {
                finish_pending_io(fd, vcpu, pio, mmio)?;
                VcpuState::save(fd, msrs, cpuid).map_err(|e| crate::error_chain(&e))
            };
            if !self.control.may_run(index, &mut save) {
                return None;
            }
            let action = match self.fd.run() {
                Ok(exit) => {
                    let io_size = exit_io_size();
                    handle_exit_sized(self.index, &self.pio, &self.mmio, exit, io_size)
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                    if self.all_halted(&mut halt_round) {
                        return Some(StopReason::GuestHalted);
                    }
                    ExitAction::Continue
                }
                Err(e) => ExitAction::Stop(StopReason::RunFailed {
                    vcpu: self.index,
                    errno: e.errno(),
                }),
            };
            if let ExitAction::Stop(reason) = action {
                return Some(self.annotate(reason));
            }
        }
    }

    /// Answers a new halt check, if one was asked since `seen`: whether this vCPU
    /// is stopped for good (halted with interrupts off, which only an NMI or INIT
    /// could end, or never started) and, if so, whether it is the last of all
    /// vCPUs to be.
    fn all_halted(&mut self, seen: &mut u64) -> bool {
        let round = self.control.halt_round();
        if round == *seen {
            return false;
        }
        *seen = round;
        let stopped = match self.fd.get_mp_state().map(|s| s.mp_state) {
            Ok(KVM_MP_STATE_HALTED) => self
                .fd
                .get_regs()
                .is_ok_and(|regs| regs.rflags & RFLAGS_IF == 0),
            // An application processor the guest never started (or sent INIT).
            Ok(KVM_MP_STATE_UNINITIALIZED | KVM_MP_STATE_INIT_RECEIVED) => true,
            _ => false,
        };
        stopped && self.control.report_halted(round, self.vcpu_count)
    }

    /// Adds what only the live vCPU can tell: RIP and KVM's internal-error suberror.
    fn annotate(&mut self, reason: StopReason) -> StopReason {
        let reason = match reason {
            StopReason::InternalError { vcpu, rip, .. } => {
                // SAFETY: the last exit was KVM_EXIT_INTERNAL_ERROR, so KVM filled the
                // `internal` member of the kvm_run exit union.
                let suberror = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                StopReason::InternalError {
                    vcpu,
                    suberror,
                    rip,
                }
            }
            other => other,
        };
        let rip = self.fd.get_regs().ok().map(|regs| regs.rip);
        reason.with_rip(rip)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use devices::bus::BusDevice;

    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    fn buses() -> (Bus, Bus, Arc<Mutex<Recorder>>) {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut pio = Bus::new();
        pio.insert(dev.clone(), 0x3f8, 8).unwrap();
        let mut mmio = Bus::new();
        mmio.insert(dev.clone(), 0xd000_0000, 0x1000).unwrap();
        (pio, mmio, dev)
    }

    #[test]
    fn handle_exit_io_out_reaches_device_at_offset() {
        let (pio, mmio, dev) = buses();
        let action = handle_exit(0, &pio, &mmio, VcpuExit::IoOut(0x3f9, &[7]));
        assert_eq!(action, ExitAction::Continue);
        assert_eq!(dev.lock().unwrap().writes, vec![(1, vec![7])]);
    }

    #[test]
    fn handle_exit_io_in_unclaimed_reads_all_ones() {
        let (pio, mmio, _) = buses();
        let mut data = [0u8; 2];
        let action = handle_exit(0, &pio, &mmio, VcpuExit::IoIn(0x70, &mut data));
        assert_eq!(action, ExitAction::Continue);
        assert_eq!(data, [0xff, 0xff]);
    }

    #[test]
    fn handle_exit_io_in_claimed_reads_device() {
        let (pio, mmio, _) = buses();
        let mut data = [0u8; 1];
        handle_exit(0, &pio, &mmio, VcpuExit::IoIn(0x3fd, &mut data));
        assert_eq!(data, [5]);
    }

    #[test]
    fn handle_exit_sized_splits_string_port_io_into_elements() {
        let (pio, mmio, dev) = buses();
        // `rep insw` of three elements: three 2-byte reads of the port.
        let mut data = [0u8; 6];
        handle_exit_sized(0, &pio, &mmio, VcpuExit::IoIn(0x3fd, &mut data), 2);
        assert_eq!(data, [5; 6]);
        // `rep outsb` of three bytes: three 1-byte writes.
        handle_exit_sized(0, &pio, &mmio, VcpuExit::IoOut(0x3f8, &[1, 2, 3]), 1);
        assert_eq!(
            dev.lock().unwrap().writes,
            vec![(0, vec![1]), (0, vec![2]), (0, vec![3])]
        );
    }

    #[test]
    fn handle_exit_mmio_goes_to_mmio_bus_only() {
        let (pio, mmio, dev) = buses();
        handle_exit(
            0,
            &pio,
            &mmio,
            VcpuExit::MmioWrite(0xd000_0010, &[1, 2, 3, 4]),
        );
        let mut data = [0u8; 4];
        handle_exit(0, &pio, &mmio, VcpuExit::MmioRead(0x3f8, &mut data));
        assert_eq!(data, [0xff; 4]);
        assert_eq!(dev.lock().unwrap().writes, vec![(0x10, vec![1, 2, 3, 4])]);
    }

    #[test]
    fn handle_exit_shutdown_is_triple_fault() {
        let (pio, mmio, _) = buses();
        let action = handle_exit(2, &pio, &mmio, VcpuExit::Shutdown);
        assert_eq!(
            action,
            ExitAction::Stop(StopReason::TripleFault { vcpu: 2, rip: None })
        );
    }

    #[test]
    fn handle_exit_system_reset_is_clean() {
        let (pio, mmio, _) = buses();
        let action = handle_exit(
            0,
            &pio,
            &mmio,
            VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_RESET, &[]),
        );
        let ExitAction::Stop(reason) = action else {
            panic!("expected stop");
        };
        assert!(reason.is_clean());
    }

    #[test]
    fn handle_exit_internal_error_and_fail_entry_stop() {
        let (pio, mmio, _) = buses();
        let action = handle_exit(1, &pio, &mmio, VcpuExit::InternalError);
        assert!(matches!(
            action,
            ExitAction::Stop(StopReason::InternalError { vcpu: 1, .. })
        ));
        let action = handle_exit(0, &pio, &mmio, VcpuExit::FailEntry(0x80000021, 0));
        assert!(matches!(
            action,
            ExitAction::Stop(StopReason::FailEntry {
                reason: 0x80000021,
                ..
            })
        ));
    }

    #[test]
    fn handle_exit_hlt_continues_and_unknown_stops() {
        let (pio, mmio, _) = buses();
        assert_eq!(
            handle_exit(0, &pio, &mmio, VcpuExit::Hlt),
            ExitAction::Continue
        );
        assert!(matches!(
            handle_exit(0, &pio, &mmio, VcpuExit::Unsupported(999)),
            ExitAction::Stop(StopReason::UnexpectedExit { .. })
        ));
    }

    #[test]
    fn handle_exit_counts_the_exit_in_metrics() {
        let (pio, mmio, _) = buses();
        let before = metrics().vcpu_exit_count(ExitReason::MmioWrite);

        handle_exit(0, &pio, &mmio, VcpuExit::MmioWrite(0xd000_0000, &[1]));

        // Other tests count exits concurrently: the counter only grows.
        assert!(metrics().vcpu_exit_count(ExitReason::MmioWrite) > before);
    }

    #[test]
    fn stop_reason_messages_name_exit_and_rip() {
        let reason = StopReason::TripleFault {
            vcpu: 0,
            rip: Some(0x1000000),
        };
        assert_eq!(
            reason.to_string(),
            "guest triple fault on vCPU 0 (KVM_EXIT_SHUTDOWN) at RIP 0x1000000"
        );
        let reason = StopReason::InternalError {
            vcpu: 1,
            suberror: 1,
            rip: None,
        };
        assert!(reason.to_string().contains("emulation failed"));
        assert!(!reason.is_clean());
    }
}
