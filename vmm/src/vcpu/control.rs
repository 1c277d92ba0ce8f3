//! How the VMM thread steers its vCPU threads: stop, pause and resume, halt
//! checks, and reading each parked vCPU's state for a snapshot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::snapshot::cpu::VcpuState;

/// What the VMM asks of its vCPU threads.
#[derive(Debug, Default)]
struct ControlState {
    stop: bool,
    paused: bool,
    /// How many vCPU threads are parked outside KVM_RUN.
    parked: usize,
    /// The current halt check (see [`VcpuControl::request_halt_check`]).
    halt_round: u64,
    /// How many vCPUs found themselves halted with interrupts off in this round.
    halted: usize,
    /// A save request (see [`VcpuControl::save_parked`]): one slot per vCPU, by
    /// index, empty until that vCPU has read its state into it.
    saved: Vec<Option<Result<VcpuState, String>>>,
}

/// Shared between the VMM thread and every vCPU thread: stop and pause requests, and
/// how many vCPUs have parked. The VMM sets a request, then kicks the threads out of
/// KVM_RUN; each thread checks the request before every KVM_RUN.
#[derive(Debug, Default)]
pub struct VcpuControl {
    state: Mutex<ControlState>,
    changed: Condvar,
    /// Raised by a device when the guest resets or powers off the machine: the vCPU
    /// that did it leaves before it runs another guest instruction, and the others
    /// at their next exit; the VMM then ends the VM.
    guest_stop: Arc<AtomicBool>,
}

impl VcpuControl {
    /// A control whose vCPUs also leave once `guest_stop` is raised.
    pub fn new(guest_stop: Arc<AtomicBool>) -> Self {
        Self {
            guest_stop,
            ..Self::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks every vCPU to leave for good.
    pub fn request_stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }

    /// Asks every vCPU to park; the caller then kicks them and waits with
    /// [`VcpuControl::wait_parked`].
    pub fn request_pause(&self) {
        self.lock().paused = true;
    }

    /// Starts a halt check: each vCPU, once kicked out of KVM_RUN, reports whether
    /// it is halted with interrupts off; the last of all of them to say so stops
    /// the VM.
    pub fn request_halt_check(&self) {
        let mut state = self.lock();
        state.halt_round = state.halt_round.wrapping_add(1);
        state.halted = 0;
    }

    pub(super) fn halt_round(&self) -> u64 {
        self.lock().halt_round
    }

    /// Counts this vCPU as halted in `round`; true when all `count` are.
    pub(super) fn report_halted(&self, round: u64, count: usize) -> bool {
        let mut state = self.lock();
        if state.halt_round != round {
            return false;
        }
        state.halted += 1;
        state.halted == count
    }

    /// Lets parked vCPUs run again.
    pub fn resume(&self) {
        self.lock().paused = false;
        self.changed.notify_all();
    }

    /// Waits until `count` vCPUs are parked; false on timeout.
    pub fn wait_parked(&self, count: usize, timeout: Duration) -> bool {
        let guard = self.lock();
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |s| s.parked < count && !s.stop)
            .unwrap_or_else(|p| p.into_inner());
        guard.parked >= count
    }

    /// Asks each of `count` parked vCPUs for its state (read by its own thread, as
    /// KVM wants) and waits for all of them; the first failure is the error.
    pub fn save_parked(&self, count: usize, timeout: Duration) -> Result<Vec<VcpuState>, String> {
        let mut state = self.lock();
        state.saved = (0..count).map(|_| None).collect();
        self.changed.notify_all();
        let (mut state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |s| {
                !s.stop && s.saved.iter().any(Option::is_none)
            })
            .unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut state.saved)
            .into_iter()
            .enumerate()
            .map(|(index, saved)| {
                saved
                    .unwrap_or_else(|| {
                        Err(format!("vCPU {index} did not answer within {timeout:?}"))
                    })
                    .map_err(|e| format!("vCPU {index}: {e}"))
            })
            .collect()
    }

    /// Called by a vCPU thread before KVM_RUN: parks while paused, answering save
    /// requests with `save` meanwhile; returns false when the vCPU must leave.
    pub(super) fn may_run(
        &self,
        index: usize,
        save: &mut dyn FnMut() -> Result<VcpuState, String>,
    ) -> bool {
        if self.guest_stop.load(Ordering::Acquire) {
            return false;
        }
        let mut state = self.lock();
        if state.paused && !state.stop {
            state.parked += 1;
            self.changed.notify_all();
            while state.paused && !state.stop {
                // A save request is an empty slot for this vCPU, whether it was
                // made before or after the vCPU parked.
                if let Some(slot @ None) = state.saved.get_mut(index) {
                    *slot = Some(save());
                    self.changed.notify_all();
                    continue;
                }
                state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            state.parked -= 1;
        }
        !state.stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vCPU thread that asks once whether it may run; its answer.
    fn vcpu_thread(control: &Arc<VcpuControl>) -> std::thread::JoinHandle<bool> {
        let control = control.clone();
        std::thread::spawn(move || control.may_run(0, &mut || Err("no vCPU".into())))
    }

    #[test]
    fn vcpu_control_pause_parks_and_resume_releases() {
        let control = Arc::new(VcpuControl::default());
        control.request_pause();
        let worker = vcpu_thread(&control);
        assert!(control.wait_parked(1, Duration::from_secs(10)));
        control.resume();
        assert!(worker.join().unwrap(), "a resumed vCPU may run");
    }

    #[test]
    fn vcpu_control_save_is_answered_by_each_parked_vcpu_once() {
        let control = Arc::new(VcpuControl::default());
        control.request_pause();
        let workers: Vec<_> = (0..2)
            .map(|index| {
                let control = control.clone();
                std::thread::spawn(move || {
                    let mut answers = 0;
                    let mut save = || {
                        answers += 1;
                        Err(format!("answer {answers}"))
                    };
                    control.may_run(index, &mut save);
                    answers
                })
            })
            .collect();
        assert!(control.wait_parked(2, Duration::from_secs(10)));
        let err = control.save_parked(2, Duration::from_secs(10)).unwrap_err();
        assert_eq!(err, "vCPU 0: answer 1");
        let err = control.save_parked(2, Duration::from_secs(10)).unwrap_err();
        assert_eq!(err, "vCPU 0: answer 2");
        control.resume();
        for worker in workers {
            assert_eq!(worker.join().unwrap(), 2, "one answer per request");
        }
    }

    #[test]
    fn vcpu_control_save_waits_for_a_vcpu_that_parks_later() {
        let control = Arc::new(VcpuControl::default());
        control.request_pause();
        let saver = {
            let control = control.clone();
            std::thread::spawn(move || control.save_parked(1, Duration::from_secs(10)))
        };
        // The vCPU parks only after the request was made.
        let worker = {
            let control = control.clone();
            std::thread::spawn(move || control.may_run(0, &mut || Err("late".into())))
        };
        assert_eq!(saver.join().unwrap().unwrap_err(), "vCPU 0: late");
        control.resume();
        assert!(worker.join().unwrap());
    }

    #[test]
    fn vcpu_control_guest_stop_keeps_vcpus_out_of_the_guest() {
        let raised = Arc::new(AtomicBool::new(false));
        let control = VcpuControl::new(raised.clone());
        let mut save = || Err("no vCPU".to_owned());
        assert!(control.may_run(0, &mut save));
        raised.store(true, Ordering::Release);
        assert!(!control.may_run(0, &mut save));
    }

    #[test]
    fn vcpu_control_stop_releases_parked_vcpus() {
        let control = Arc::new(VcpuControl::default());
        control.request_pause();
        let worker = vcpu_thread(&control);
        assert!(control.wait_parked(1, Duration::from_secs(10)));
        control.request_stop();
        assert!(!worker.join().unwrap(), "a stopped vCPU must leave");
    }
}
