//! The VMM thread: one event loop for the whole life of a VM. It serves the API
//! (when there is one), builds and starts the VM, runs one thread per vCPU, and
//! watches stdin, guest resets, vCPU exits, virtqueue notifications and signals.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use log::{debug, info, warn};
use thiserror::Error;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

use crate::api::model::{ConfigChange, DeviceUpdate};
use crate::api::state::VmAction;
use crate::api::{model, ApiMessage, ApiRequest, ApiResponse, VmState};
use crate::builder::{build_vm, BuildError};
use crate::config::VmConfig;
use crate::error_chain;
use crate::logger::{self, LoggerError};
use crate::metrics::{MetricsError, MetricsSink, METRICS_PERIOD};
use crate::seccomp::{Filters, SeccompError, ThreadKind};
use crate::stdio::RawTerminal;
use crate::vcpu::{self, StopReason, VcpuStopped};

mod running;
mod snapshot;

use running::{RunningVm, Start};

/// Signals that stop the VM in an orderly way.
pub const STOP_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];
/// How often the vCPUs are asked whether the guest halted for good.
const HALT_CHECK_PERIOD: Duration = Duration::from_secs(1);
/// How long a pause may take to park every vCPU.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Failures of the VMM thread itself (not of the guest).
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
    /// The VM could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The VMM thread could not install its seccomp filter.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// The configured log file could not be used.
    #[error(transparent)]
    Logger(#[from] LoggerError),
    /// The configured metrics file could not be used.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A snapshot could not be loaded.
    #[error("{0}")]
    Restore(String),
}

/// How the VMM thread runs, beyond the VM's configuration.
#[derive(Debug)]
pub struct RunOptions {
    /// Build and start the VM at once (else on InstanceStart from the API).
    pub boot_now: bool,
    /// The seccomp filters; `None` runs every thread unfiltered (`--no-seccomp`).
    /// The VMM thread installs its filter right after the VM is built and its
    /// vCPUs started, each vCPU thread before its run loop.
    pub seccomp: Option<Filters>,
    /// Start from this snapshot instead (`cabin run --restore`).
    pub restore: Option<crate::api::model::snapshot::LoadPlan>,
}

/// The API's side of the event loop: requests arrive on `requests`, and `wake`
/// is written after each one.
#[derive(Debug)]
pub struct ApiEndpoint {
    /// Requests from the API thread.
    pub requests: Receiver<ApiMessage>,
    /// Readable when a request is waiting.
    pub wake: EventFd,
}

/// Runs cabin's VMM thread until the VM ends; returns why it ended.
///
/// With `options.boot_now`, the VM is built and started at once (a build error is
/// returned before anything runs); otherwise it waits for InstanceStart on the API.
pub fn run(
    config: VmConfig,
    api: Option<ApiEndpoint>,
    options: RunOptions,
) -> Result<StopReason, RunError> {
    vcpu::register_kick_handler().map_err(|e| {
        RunError::Setup(
            "the vCPU kick signal",
            io::Error::from_raw_os_error(e.errno()),
        )
    })?;
    let signals = Signals::register()?;
    let mut controller = Controller::new(config, api, signals.streams()?, options.seccomp)?;
    // Created before the VM starts: with seccomp, the VMM thread may not create
    // epoll sets once the VM runs.
    let mut manager: EventManager<Arc<Mutex<Controller>>> =
        EventManager::new().map_err(RunError::EventLoop)?;
    if let Some(plan) = &options.restore {
        controller.load_snapshot(plan, None)?;
    } else if options.boot_now {
        controller.start_vm()?;
    }
    let _terminal = RawTerminal::new().map_err(|e| RunError::Setup("the terminal", e))?;
    let controller = Arc::new(Mutex::new(controller));
    manager.add_subscriber(controller.clone());

    let result = loop {
        if let Err(e) = manager.run() {
            break Err(RunError::EventLoop(e));
        }
        let mut controller = lock(&controller);
        if let Some(reason) = controller.outcome.take() {
            controller.shut_down(&reason);
            // A last line, as Firecracker writes at exit, so short runs have one too.
            if controller.metrics.is_some() {
                if let Err(e) = controller.flush_metrics() {
                    warn!("{e}");
                }
            }
            break Ok(reason);
        }
    };
    drop(signals);
    result
}

pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Stop signals delivered as bytes on one socket per signal (signal-hook).
struct Signals {
    ids: Vec<signal_hook::SigId>,
    streams: Vec<(i32, UnixStream)>,
}

impl Signals {
    fn register() -> Result<Self, RunError> {
        let setup_err = |e| RunError::Setup("signal handling", e);
        let mut ids = Vec::new();
        let mut streams = Vec::new();
        for sig in STOP_SIGNALS {
            let (rx, tx) = UnixStream::pair().map_err(setup_err)?;
            rx.set_nonblocking(true).map_err(setup_err)?;
            ids.push(signal_hook::low_level::pipe::register(sig, tx).map_err(setup_err)?);
            streams.push((sig, rx));
        }
        Ok(Signals { ids, streams })
    }

    fn streams(&self) -> Result<Vec<(i32, UnixStream)>, RunError> {
        self.streams
            .iter()
            .map(|(sig, rx)| {
                Ok((
                    *sig,
                    rx.try_clone()
                        .map_err(|e| RunError::Setup("signal handling", e))?,
                ))
            })
            .collect()
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// The event-loop side of cabin: lifecycle state, the VM once started, and every
/// file descriptor the VMM thread waits on.
struct Controller {
    config: VmConfig,
    state: VmState,
    api: Option<ApiEndpoint>,
    /// Seccomp filters for the VMM and vCPU threads (`None`: off).
    seccomp: Option<Filters>,
    vm: Option<RunningVm>,
    /// A VM started before the event loop existed, whose fds `init` must add.
    vm_fds_pending: bool,
    exit_evt: EventFd,
    vcpu_events: Receiver<VcpuStopped>,
    vcpu_events_tx: Sender<VcpuStopped>,
    /// One socket per stop signal, written by signal-hook's handler.
    signals: Vec<(i32, UnixStream)>,
    outcome: Option<StopReason>,
    /// Where metrics lines go, once configured.
    metrics: Option<MetricsSink>,
    /// Fires every [`METRICS_PERIOD`] once metrics are configured (created up
    /// front: the VMM thread may not create descriptors once the VM runs).
    metrics_timer: TimerFd,
    /// Fires when a guest asked to shut down has had its time to power off.
    shutdown_timer: TimerFd,
    /// How long that time is, once a shutdown was asked for.
    shutdown_after: Option<Duration>,
    /// Fires every [`HALT_CHECK_PERIOD`] while the VM runs, to notice a guest that
    /// halted every vCPU with interrupts off.
    halt_timer: TimerFd,
}

impl Controller {
    fn new(
        config: VmConfig,
        api: Option<ApiEndpoint>,
        signals: Vec<(i32, UnixStream)>,
        seccomp: Option<Filters>,
    ) -> Result<Self, RunError> {
        let (vcpu_events_tx, vcpu_events) = channel();
        if let Some(settings) = &config.logger {
            logger::configure(settings)?;
        }
        let metrics = config
            .metrics_path
            .as_deref()
            .map(MetricsSink::open)
            .transpose()?;
        let timer = |what| {
            TimerFd::new()
                .map_err(|e| RunError::Setup(what, io::Error::from_raw_os_error(e.errno())))
        };
        let metrics_timer = timer("the metrics timer")?;
        let shutdown_timer = timer("the shutdown timer")?;
        let halt_timer = timer("the halt check timer")?;
        let mut controller = Controller {
            config,
            state: VmState::NotStarted,
            api,
            seccomp,
            vm: None,
            vm_fds_pending: false,
            exit_evt: EventFd::new(EFD_NONBLOCK)
                .map_err(|e| RunError::Setup("the exit eventfd", e))?,
            vcpu_events,
            vcpu_events_tx,
            signals,
            outcome: None,
            metrics,
            metrics_timer,
            shutdown_timer,
            shutdown_after: None,
            halt_timer,
        };
        if controller.metrics.is_some() {
            controller.arm_metrics_timer();
        }
        Ok(controller)
    }

    fn arm_metrics_timer(&mut self) {
        if let Err(e) = self
            .metrics_timer
            .reset(METRICS_PERIOD, Some(METRICS_PERIOD))
        {
            warn!("cannot start the metrics timer: {e}");
        }
    }

    /// Writes a metrics line, if metrics are configured.
    fn flush_metrics(&mut self) -> Result<(), String> {
        let Some(sink) = self.metrics.as_mut() else {
            return Err("Metrics are not configured: PUT /metrics first".into());
        };
        sink.flush()
            .map_err(|e| format!("Cannot write metrics to {}: {e}", sink.path().display()))
    }

    /// Applies a configuration change: files it names are opened first (logger,
    /// metrics), so a change that cannot work is refused and changes nothing.
    fn configure(&mut self, change: ConfigChange) -> Result<(), String> {
        let mut next = self.config.clone();
        let is_logger = matches!(change, ConfigChange::Logger(_));
        let is_metrics = matches!(change, ConfigChange::Metrics(_));
        model::apply(&mut next, change)?;
        if is_logger {
            if let Some(settings) = &next.logger {
                logger::configure(settings).map_err(|e| error_chain(&e))?;
            }
        }
        if is_metrics {
            if let Some(path) = &next.metrics_path {
                self.metrics = Some(MetricsSink::open(path).map_err(|e| error_chain(&e))?);
                self.arm_metrics_timer();
            }
        }
        self.config = next;
        Ok(())
    }

    /// Applies a PATCH to a running VM's drive or network interface.
    fn update_device(&mut self, update: DeviceUpdate) -> Result<(), String> {
        let vm = self.vm.as_ref().ok_or("The VM is not running")?;
        match update {
            DeviceUpdate::Drive(patch) => {
                let change = model::check_drive_patch(&self.config, &patch)?;
                let device = vm.disks.get(change.index).ok_or("No such drive")?;
                let mut device = lock(device);
                if let Some(path) = &change.path {
                    device
                        .update_backing_file(path)
                        .map_err(|e| format!("path_on_host: {}", error_chain(&e)))?;
                    self.config.disks[change.index].path = path.clone();
                }
                if let Some(limits) = &change.rate_limiter {
                    device.update_rate_limiter(limits);
                    self.config.disks[change.index].rate_limiter = Some(*limits);
                }
            }
            DeviceUpdate::Net(patch) => {
                let change = model::check_net_patch(&self.config, &patch)?;
                let device = vm.nets.get(change.index).ok_or("No such interface")?;
                lock(device).update_rate_limiters(change.rx, change.tx);
                let net = &mut self.config.nets[change.index];
                if change.rx.is_some() {
                    net.rx_rate_limiter = change.rx;
                }
                if change.tx.is_some() {
                    net.tx_rate_limiter = change.tx;
                }
            }
        }
        Ok(())
    }

    /// Builds the VM from the configuration, starts its vCPUs, then confines the
    /// VMM thread to its seccomp filter: from here on it only serves the running VM.
    fn start_vm(&mut self) -> Result<(), RunError> {
        let built = build_vm(&self.config)?;
        self.start_built(built, Start::Boot)
    }

    /// Starts the vCPUs of a built VM (running, or parked for a restored one), then
    /// confines the VMM thread.
    fn start_built(&mut self, built: crate::builder::BuiltVm, how: Start) -> Result<(), RunError> {
        let mut running = RunningVm::start(
            built,
            &self.vcpu_events_tx,
            &self.exit_evt,
            self.seccomp.as_ref(),
            how,
        )?;
        if let Some(filters) = &self.seccomp {
            if let Err(e) = filters.program(ThreadKind::Vmm).apply() {
                running.stop_vcpus();
                return Err(RunError::Seccomp(e));
            }
        }
        self.vm = Some(running);
        self.state = match how {
            Start::Boot => VmState::Running,
            Start::Restored => VmState::Paused,
        };
        if let Err(e) = self
            .halt_timer
            .reset(HALT_CHECK_PERIOD, Some(HALT_CHECK_PERIOD))
        {
            warn!("cannot start the halt check timer: {e}");
        }
        self.vm_fds_pending = true;
        Ok(())
    }

    /// Adds the running VM's descriptors to the event loop.
    fn watch_vm(&mut self, ops: &mut EventOps) {
        self.vm_fds_pending = false;
        let Some(vm) = &mut self.vm else { return };
        let mut ok = ops.add(Events::new(&vm.reset_evt, EventSet::IN)).is_ok();
        ok &= ops.add(Events::new(&vm.poweroff_evt, EventSet::IN)).is_ok();
        for q in &vm.queue_evts {
            ok &= ops.add(Events::new(&q.evt, EventSet::IN)).is_ok();
        }
        for d in &vm.device_evts {
            ok &= ops.add(Events::new_raw(d.fd, EventSet::IN)).is_ok();
        }
        ok &= vm.console_input.watch(ops);
        if !ok {
            warn!("cannot watch the VM's events; stopping");
            self.finish(StopReason::Signal(libc::SIGABRT));
        }
    }

    fn finish(&mut self, reason: StopReason) {
        if self.outcome.is_none() {
            self.outcome = Some(reason);
        }
    }

    /// Stops the vCPUs; logs other reasons vCPUs reported meanwhile.
    fn shut_down(&mut self, reason: &StopReason) {
        if let Some(mut vm) = self.vm.take() {
            vm.stop_vcpus();
        }
        self.state = VmState::Exited;
        while let Ok(VcpuStopped(other)) = self.vcpu_events.try_recv() {
            if &other != reason {
                debug!("also: {other}");
            }
        }
    }

    /// Presses the guest's power button and gives it `timeout` to power off; a
    /// second request keeps the first deadline.
    fn shut_down_guest(&mut self, timeout: Duration) -> Result<ApiResponse, ApiResponse> {
        let vm = self.vm.as_ref().ok_or_else(no_vm)?;
        lock(&vm.acpi_pm)
            .press_power_button()
            .map_err(|e| ApiResponse::Error {
                status: 500,
                message: format!("Cannot press the power button: {e}"),
            })?;
        if self.shutdown_after.is_none() {
            if let Err(e) = self.shutdown_timer.reset(timeout, None) {
                warn!("cannot start the shutdown timer: {e}");
            }
            self.shutdown_after = Some(timeout);
            info!(
                "pressed the guest's power button; stopping it in {timeout:?} unless it powers off"
            );
        }
        Ok(ApiResponse::Done)
    }

    /// Serves every waiting API request.
    fn serve_api(&mut self, ops: &mut EventOps) {
        let Some(api) = &self.api else { return };
        let _ = api.wake.read();
        let messages: Vec<ApiMessage> = api.requests.try_iter().collect();
        for message in messages {
            let response = self.handle_request(message.request, ops);
            // A client that hung up does not care about the answer.
            let _ = message.reply.send(response);
        }
    }

    fn transition(&self, action: VmAction) -> Result<VmState, ApiResponse> {
        self.state
            .next(action)
            .map_err(|message| ApiResponse::Error {
                status: 400,
                message,
            })
    }

    fn handle_request(&mut self, request: ApiRequest, ops: &mut EventOps) -> ApiResponse {
        let result = match request {
            ApiRequest::Describe => Ok(ApiResponse::Describe {
                id: instance_id(),
                state: self.state,
            }),
            ApiRequest::GetConfig => Ok(ApiResponse::Config(Box::new(self.config.clone()))),
            ApiRequest::Configure(change) => self.transition(VmAction::Configure).and_then(|_| {
                self.configure(change)
                    .map(|()| ApiResponse::Done)
                    .map_err(bad_request)
            }),
            ApiRequest::Update(update) => self.transition(VmAction::Update).and_then(|_| {
                self.update_device(update)
                    .map(|()| ApiResponse::Done)
                    .map_err(bad_request)
            }),
            ApiRequest::FlushMetrics => self
                .flush_metrics()
                .map(|()| ApiResponse::Done)
                .map_err(bad_request),
            ApiRequest::Start => {
                self.transition(VmAction::Start)
                    .and_then(|_| match self.start_vm() {
                        Ok(()) => {
                            self.watch_vm(ops);
                            info!("VM started through the API");
                            Ok(ApiResponse::Done)
                        }
                        Err(e) => Err(ApiResponse::Error {
                            status: 400,
                            message: error_chain(&e),
                        }),
                    })
            }
            ApiRequest::Pause => self.transition(VmAction::Pause).and_then(|next| {
                let vm = self.vm.as_mut().ok_or_else(no_vm)?;
                vm.pause().map_err(|message| ApiResponse::Error {
                    status: 500,
                    message,
                })?;
                self.state = next;
                Ok(ApiResponse::Done)
            }),
            ApiRequest::Resume => self.transition(VmAction::Resume).and_then(|next| {
                let vm = self.vm.as_mut().ok_or_else(no_vm)?;
                vm.resume(Some(ops));
                self.state = next;
                Ok(ApiResponse::Done)
            }),
            ApiRequest::Shutdown { timeout } => self
                .transition(VmAction::Shutdown)
                .and_then(|_| self.shut_down_guest(timeout)),
            ApiRequest::CreateSnapshot(params) => self
                .transition(VmAction::Snapshot)
                .and_then(|_| self.create_snapshot(&params)),
            ApiRequest::LoadSnapshot(plan) => self.transition(VmAction::Load).and_then(|_| {
                match self.load_snapshot(&plan, Some(ops)) {
                    Ok(()) => {
                        self.watch_vm(ops);
                        Ok(ApiResponse::Done)
                    }
                    Err(e) => Err(bad_request(error_chain(&e))),
                }
            }),
            ApiRequest::CtrlAltDel => self.transition(VmAction::CtrlAltDel).and_then(|_| {
                let vm = self.vm.as_ref().ok_or_else(no_vm)?;
                lock(&vm.i8042)
                    .trigger_ctrl_alt_del()
                    .map(|()| ApiResponse::Done)
                    .map_err(|e| ApiResponse::Error {
                        status: 400,
                        message: format!("Cannot send Ctrl-Alt-Del: {}", error_chain(&e)),
                    })
            }),
        };
        result.unwrap_or_else(|error| error)
    }
}

fn bad_request(message: String) -> ApiResponse {
    ApiResponse::Error {
        status: 400,
        message,
    }
}

pub(super) fn no_vm() -> ApiResponse {
    ApiResponse::Error {
        status: 400,
        message: "The VM is not running".into(),
    }
}

/// Firecracker reports an instance id; cabin's is its process id.
pub fn instance_id() -> String {
    format!("cabin-{}", std::process::id())
}

impl MutEventSubscriber for Controller {
    fn init(&mut self, ops: &mut EventOps) {
        let mut ok = ops.add(Events::new(&self.exit_evt, EventSet::IN)).is_ok();
        for (_, rx) in &self.signals {
            ok &= ops.add(Events::new(rx, EventSet::IN)).is_ok();
        }
        if let Some(api) = &self.api {
            ok &= ops.add(Events::new(&api.wake, EventSet::IN)).is_ok();
        }
        ok &= ops
            .add(Events::new(&self.metrics_timer, EventSet::IN))
            .is_ok();
        ok &= ops
            .add(Events::new(&self.shutdown_timer, EventSet::IN))
            .is_ok();
        ok &= ops.add(Events::new(&self.halt_timer, EventSet::IN)).is_ok();
        if !ok {
            warn!("cannot watch VMM events; stopping");
            self.finish(StopReason::Signal(libc::SIGABRT));
        }
        if self.vm_fds_pending {
            self.watch_vm(ops);
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.exit_evt.as_raw_fd() {
            let _ = self.exit_evt.read();
            if let Ok(VcpuStopped(reason)) = self.vcpu_events.try_recv() {
                self.finish(reason);
            }
            return;
        }
        if fd == self.halt_timer.as_raw_fd() {
            let _ = self.halt_timer.wait();
            if let (VmState::Running, Some(vm)) = (self.state, &self.vm) {
                vm.control.request_halt_check();
                vm.kick_vcpus();
            }
            return;
        }
        if fd == self.shutdown_timer.as_raw_fd() {
            let _ = self.shutdown_timer.wait();
            if let Some(after) = self.shutdown_after {
                self.finish(StopReason::ShutdownTimedOut(after));
            }
            return;
        }
        if fd == self.metrics_timer.as_raw_fd() {
            let _ = self.metrics_timer.wait();
            if let Err(e) = self.flush_metrics() {
                warn!("{e}");
            }
            return;
        }
        if self
            .api
            .as_ref()
            .is_some_and(|api| api.wake.as_raw_fd() == fd)
        {
            self.serve_api(ops);
            return;
        }
        if let Some((sig, mut rx)) = self
            .signals
            .iter()
            .find(|(_, rx)| rx.as_raw_fd() == fd)
            .map(|(sig, rx)| (*sig, rx))
        {
            let mut buf = [0u8; 16];
            let _ = rx.read(&mut buf);
            self.finish(StopReason::Signal(sig));
            return;
        }
        let paused = self.state == VmState::Paused;
        let Some(vm) = self.vm.as_mut() else { return };
        if vm.console_input.process(fd, events.event_set(), ops) {
            return;
        }
        if fd == vm.reset_evt.as_raw_fd() {
            let _ = vm.reset_evt.read();
            self.finish(StopReason::GuestReset);
        } else if fd == vm.poweroff_evt.as_raw_fd() {
            let _ = vm.poweroff_evt.read();
            self.finish(StopReason::GuestShutdown);
        } else if let Some(index) = vm.queue_evts.iter().position(|q| q.evt.as_raw_fd() == fd) {
            let q = &vm.queue_evts[index];
            // Reading resets the counter; several notifications coalesce into one pass.
            let _ = q.evt.read();
            if paused {
                if !vm.deferred.contains(&index) {
                    vm.deferred.push(index);
                }
            } else {
                lock(&q.transport).process_queue(q.queue);
            }
        } else if let Some(index) = vm.device_evts.iter().position(|d| d.fd == fd) {
            if !paused {
                vm.device_evts[index].process();
            } else if !vm.deferred_devices.contains(&index) {
                // Level-triggered: stop watching until resume, or the loop would spin.
                let _ = ops.remove(Events::new_raw(fd, EventSet::IN));
                vm.deferred_devices.push(index);
            }
        }
    }
}
