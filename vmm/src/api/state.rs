//! The VM lifecycle state machine: one exhaustive transition table.

use std::fmt;

/// Where a VM is in its life. Names are Firecracker's as the API reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmState {
    /// Configured (or being configured), not booted.
    NotStarted,
    /// vCPUs running.
    Running,
    /// vCPUs parked outside KVM_RUN, devices not processed.
    Paused,
    /// The guest rebooted, crashed or was stopped; cabin is exiting.
    Exited,
}

/// What moves a VM from one state to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmAction {
    /// Change configuration.
    Configure,
    /// Boot.
    Start,
    /// Park the vCPUs.
    Pause,
    /// Unpark the vCPUs.
    Resume,
    /// Inject Ctrl-Alt-Del.
    CtrlAltDel,
    /// Press the power button.
    Shutdown,
    /// Change a running VM's device (PATCH /drives, /network-interfaces).
    Update,
    /// The guest or a signal ended the VM.
    Exit,
    /// Write a snapshot of the paused VM.
    Snapshot,
    /// Build the VM from a snapshot instead of booting it.
    Load,
}

impl VmState {
    /// The state after `action`, or an error message naming the state when the action
    /// is not allowed in it.
    pub fn next(self, action: VmAction) -> Result<VmState, String> {
        use VmAction as A;
        use VmState as S;
        match (self, action) {
            (S::NotStarted, A::Configure) => Ok(S::NotStarted),
            (S::NotStarted, A::Start) => Ok(S::Running),
            (S::Running, A::Pause) => Ok(S::Paused),
            (S::Paused, A::Resume) => Ok(S::Running),
            (S::Running, A::CtrlAltDel | A::Shutdown) => Ok(S::Running),
            (S::Running | S::Paused, A::Update) => Ok(self),
            (S::Paused, A::Snapshot) => Ok(S::Paused),
            (S::NotStarted, A::Load) => Ok(S::Paused),
            (S::NotStarted | S::Running | S::Paused, A::Exit) => Ok(S::Exited),
            (S::Exited, A::Exit) => Ok(S::Exited),
            (state, action) => Err(format!(
                "{} is not allowed while the VM is {state}",
                action.describe()
            )),
        }
    }
}

impl VmAction {
    fn describe(self) -> &'static str {
        match self {
            VmAction::Configure => "Changing the configuration",
            VmAction::Start => "InstanceStart",
            VmAction::Pause => "Pausing",
            VmAction::Resume => "Resuming",
            VmAction::CtrlAltDel => "SendCtrlAltDel",
            VmAction::Shutdown => "Shutdown",
            VmAction::Update => "Changing a device of the running VM",
            VmAction::Exit => "Stopping",
            VmAction::Snapshot => {
                "Creating a snapshot (pause the VM first: PATCH /vm {\"state\": \"Paused\"})"
            }
            VmAction::Load => {
                "Loading a snapshot (it needs a fresh cabin that has not started a VM)"
            }
        }
    }
}

impl fmt::Display for VmState {
    /// The state name the API reports (Firecracker's spelling).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmState::NotStarted => "Not started",
            VmState::Running => "Running",
            VmState::Paused => "Paused",
            VmState::Exited => "Exited",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_STATES: [VmState; 4] = [
        VmState::NotStarted,
        VmState::Running,
        VmState::Paused,
        VmState::Exited,
    ];
    const ALL_ACTIONS: [VmAction; 6] = [
        VmAction::Configure,
        VmAction::Start,
        VmAction::Pause,
        VmAction::Resume,
        VmAction::CtrlAltDel,
        VmAction::Exit,
    ];

    #[test]
    fn next_follows_the_table_for_every_pair() {
        use VmAction as A;
        use VmState as S;
        let allowed = [
            (S::NotStarted, A::Configure, S::NotStarted),
            (S::NotStarted, A::Start, S::Running),
            (S::NotStarted, A::Exit, S::Exited),
            (S::Running, A::Pause, S::Paused),
            (S::Running, A::CtrlAltDel, S::Running),
            (S::Running, A::Exit, S::Exited),
            (S::Paused, A::Resume, S::Running),
            (S::Paused, A::Exit, S::Exited),
            (S::Exited, A::Exit, S::Exited),
        ];
        for state in ALL_STATES {
            for action in ALL_ACTIONS {
                let expected = allowed
                    .iter()
                    .find(|(s, a, _)| *s == state && *a == action)
                    .map(|(_, _, next)| *next);
                assert_eq!(state.next(action).ok(), expected, "{state:?} + {action:?}");
            }
        }
    }

    #[test]
    fn next_refusal_names_action_and_state() {
        let err = VmState::Running.next(VmAction::Start).unwrap_err();
        assert_eq!(err, "InstanceStart is not allowed while the VM is Running");
        let err = VmState::NotStarted.next(VmAction::Pause).unwrap_err();
        assert_eq!(err, "Pausing is not allowed while the VM is Not started");
    }
}
