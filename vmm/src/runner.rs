//! Running a built VM: one thread per vCPU, and an event loop on this thread for
//! stdin, guest resets, vCPU exits and signals.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use devices::virtio::mmio::MmioTransport;
use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use log::{debug, warn};
use thiserror::Error;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::builder::{BuiltVm, ConsoleInput};
use crate::stdio::RawTerminal;
use crate::vcpu::{self, StopReason, VcpuStopped, VcpuThread};

/// Signals that stop the VM in an orderly way.
pub const STOP_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Failures of the run loop itself (not of the guest).
#[derive(Debug, Error)]
pub enum RunError {
    /// The event loop could not be set up or failed.
    #[error("Event loop failed")]
    EventLoop(#[source] event_manager::Error),
    /// A vCPU thread could not be started.
    #[error("Cannot start the thread of vCPU {0}")]
    Thread(u32, #[source] io::Error),
    /// Signal or eventfd plumbing failed.
    #[error("Cannot set up {0}")]
    Setup(&'static str, #[source] io::Error),
}

/// Runs the VM until it stops; returns why it stopped.
pub fn run_vm(vm: BuiltVm) -> Result<StopReason, RunError> {
    vcpu::register_kick_handler().map_err(|e| {
        RunError::Setup(
            "the vCPU kick signal",
            io::Error::from_raw_os_error(e.errno()),
        )
    })?;
    let mut signal_ids = Vec::new();
    let mut signals = Vec::new();
    for sig in STOP_SIGNALS {
        let setup_err = |e| RunError::Setup("signal handling", e);
        let (rx, tx) = UnixStream::pair().map_err(setup_err)?;
        rx.set_nonblocking(true).map_err(setup_err)?;
        signal_ids.push(signal_hook::low_level::pipe::register(sig, tx).map_err(setup_err)?);
        signals.push((sig, rx));
    }

    let exit_evt =
        EventFd::new(EFD_NONBLOCK).map_err(|e| RunError::Setup("the exit eventfd", e))?;
    let (events_tx, events_rx) = channel();
    let stop = Arc::new(AtomicBool::new(false));

    let terminal = RawTerminal::new().map_err(|e| RunError::Setup("the terminal", e))?;
    let controller = Arc::new(Mutex::new(Controller {
        console_input: vm.console_input.clone(),
        queue_evts: queue_events(&vm)?,
        stdin: io::stdin().as_raw_fd(),
        stdin_open: true,
        reset_evt: vm.legacy.reset_evt,
        exit_evt: exit_evt
            .try_clone()
            .map_err(|e| RunError::Setup("the exit eventfd", e))?,
        vcpu_events: events_rx,
        signals,
        outcome: None,
        dropped_input: false,
    }));
    let mut manager: EventManager<Arc<Mutex<Controller>>> =
        EventManager::new().map_err(RunError::EventLoop)?;
    manager.add_subscriber(controller.clone());

    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut start_error = None;
    for (index, fd) in vm.vcpus.into_iter().enumerate() {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let thread = VcpuThread {
            index,
            fd,
            pio: vm.pio.clone(),
            mmio: vm.mmio.clone(),
            stop: stop.clone(),
            events: events_tx.clone(),
            exit_evt: exit_evt
                .try_clone()
                .map_err(|e| RunError::Setup("the exit eventfd", e))?,
        };
        match thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || thread.run())
        {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                start_error = Some(RunError::Thread(index, e));
                break;
            }
        }
    }

    let result = match start_error {
        Some(e) => Err(e),
        None => loop {
            if let Err(e) = manager.run() {
                break Err(RunError::EventLoop(e));
            }
            let outcome = lock(&controller).outcome.take();
            if let Some(reason) = outcome {
                break Ok(reason);
            }
        },
    };

    stop_vcpus(&stop, threads);
    drop(terminal);
    for id in signal_ids {
        signal_hook::low_level::unregister(id);
    }
    // A vCPU may have reported a failure while we were stopping for another reason;
    // the first reason wins, later ones are only logged.
    if let Ok(reason) = &result {
        while let Ok(VcpuStopped(other)) = lock(&controller).vcpu_events.try_recv() {
            if &other != reason {
                debug!("also: {other}");
            }
        }
    }
    drop(vm.mem);
    result
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Asks every vCPU to leave KVM_RUN and waits for its thread.
fn stop_vcpus(stop: &AtomicBool, threads: Vec<JoinHandle<()>>) {
    stop.store(true, Ordering::Release);
    for handle in &threads {
        // SAFETY: the pthread_t belongs to a thread we spawned and have not joined, so
        // it is valid; the kick signal has a handler installed that only sets
        // immediate_exit on that thread's own kvm_run page.
        unsafe { libc::pthread_kill(handle.as_pthread_t(), vcpu::kick_signal()) };
    }
    for handle in threads {
        if handle.join().is_err() {
            warn!("a vCPU thread panicked");
        }
    }
}

/// One queue notification eventfd the event loop watches.
struct QueueEvent {
    evt: EventFd,
    transport: Arc<Mutex<MmioTransport>>,
    queue: usize,
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

/// The event-loop side of a running VM.
struct Controller {
    console_input: ConsoleInput,
    queue_evts: Vec<QueueEvent>,
    stdin: i32,
    stdin_open: bool,
    reset_evt: EventFd,
    exit_evt: EventFd,
    vcpu_events: Receiver<VcpuStopped>,
    /// One socket per stop signal, written by signal-hook's handler.
    signals: Vec<(i32, UnixStream)>,
    outcome: Option<StopReason>,
    dropped_input: bool,
}

impl Controller {
    fn finish(&mut self, reason: StopReason) {
        if self.outcome.is_none() {
            self.outcome = Some(reason);
        }
    }

    fn forward_stdin(&mut self, ops: &mut EventOps) {
        let mut buf = [0u8; 64];
        // SAFETY: reads at most buf.len() bytes into a buffer we own from fd 0.
        let n = unsafe { libc::read(self.stdin, buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            n if n > 0 => {
                let bytes = &buf[..n as usize];
                let taken = self.console_input.enqueue(bytes);
                if taken < bytes.len() && !self.dropped_input {
                    warn!(
                        "guest is not reading its console: dropped {} input bytes",
                        bytes.len() - taken
                    );
                    self.dropped_input = true;
                }
            }
            0 => self.close_stdin(ops),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::WouldBlock
                    && err.kind() != io::ErrorKind::Interrupted
                {
                    debug!("stdin: {err}");
                    self.close_stdin(ops);
                }
            }
        }
    }

    fn close_stdin(&mut self, ops: &mut EventOps) {
        if self.stdin_open {
            self.stdin_open = false;
            let _ = ops.remove(Events::new_raw(self.stdin, EventSet::IN));
        }
    }
}

impl MutEventSubscriber for Controller {
    fn init(&mut self, ops: &mut EventOps) {
        let fatal = [
            ops.add(Events::new(&self.reset_evt, EventSet::IN)),
            ops.add(Events::new(&self.exit_evt, EventSet::IN)),
        ];
        let queues_ok = self
            .queue_evts
            .iter()
            .all(|q| ops.add(Events::new(&q.evt, EventSet::IN)).is_ok());
        let signals_ok = queues_ok
            && self
                .signals
                .iter()
                .all(|(_, rx)| ops.add(Events::new(rx, EventSet::IN)).is_ok());
        if !signals_ok || fatal.iter().any(Result::is_err) {
            warn!("cannot watch VM events; stopping");
            self.finish(StopReason::Signal(libc::SIGABRT));
        }
        // stdin may be closed, /dev/null or a regular file (epoll refuses those):
        // then the guest simply gets no input.
        if ops.add(Events::new_raw(self.stdin, EventSet::IN)).is_err() {
            debug!("stdin cannot be watched; guest console input disabled");
            self.stdin_open = false;
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.reset_evt.as_raw_fd() {
            let _ = self.reset_evt.read();
            self.finish(StopReason::GuestReset);
        } else if fd == self.exit_evt.as_raw_fd() {
            let _ = self.exit_evt.read();
            if let Ok(VcpuStopped(reason)) = self.vcpu_events.try_recv() {
                self.finish(reason);
            }
        } else if let Some(q) = self.queue_evts.iter().find(|q| q.evt.as_raw_fd() == fd) {
            // Reading resets the counter; several notifications coalesce into one pass.
            let _ = q.evt.read();
            lock(&q.transport).process_queue(q.queue);
        } else if let Some((sig, mut rx)) = self
            .signals
            .iter()
            .find(|(_, rx)| rx.as_raw_fd() == fd)
            .map(|(sig, rx)| (*sig, rx))
        {
            let mut buf = [0u8; 16];
            let _ = rx.read(&mut buf);
            self.finish(StopReason::Signal(sig));
        } else if fd == self.stdin {
            if events.event_set().contains(EventSet::IN) {
                self.forward_stdin(ops);
            } else {
                self.close_stdin(ops);
            }
        }
    }
}
