//! Opening `/dev/kvm` with messages a user can act on, the capabilities cabin needs,
//! and the host report behind `cabin check`.

use std::fs;
use std::io;
use std::path::Path;

use kvm_ioctls::{Cap, Kvm};
use thiserror::Error;

/// Where KVM lives.
pub const KVM_PATH: &str = "/dev/kvm";
/// Where TAP devices are created from.
pub const TUN_PATH: &str = "/dev/net/tun";
/// The only KVM API version there has ever been.
pub const KVM_API_VERSION: i32 = 12;

/// Capabilities cabin cannot run without, with the words `cabin check` uses for them.
pub const REQUIRED_CAPS: &[(Cap, &str)] = &[
    (Cap::Irqchip, "in-kernel irqchip"),
    (Cap::Pit2, "in-kernel PIT"),
    (Cap::Irqfd, "irqfd"),
    (Cap::Ioeventfd, "ioeventfd"),
    (Cap::UserMemory, "user memory regions"),
    (Cap::SetTssAddr, "TSS address"),
    (Cap::ExtCpuid, "extended CPUID"),
    (Cap::ImmediateExit, "immediate exit"),
    (Cap::MpState, "MP state"),
];

/// Why KVM cannot be used.
#[derive(Debug, Error)]
pub enum KvmError {
    /// No `/dev/kvm`.
    #[error("{KVM_PATH} does not exist: load the KVM module (modprobe kvm_intel or kvm_amd) and enable virtualization in the firmware")]
    NotFound,
    /// `/dev/kvm` exists but this user may not open it.
    #[error("Permission denied opening {KVM_PATH}: add your user to its group (sudo usermod -aG kvm $USER, then log in again) or run as root")]
    PermissionDenied,
    /// Any other failure to open `/dev/kvm`.
    #[error("Cannot open {KVM_PATH}")]
    Open(#[source] io::Error),
    /// A KVM that speaks another API.
    #[error("KVM API version is {0}, cabin needs {KVM_API_VERSION}")]
    ApiVersion(i32),
    /// A capability cabin needs is missing.
    #[error("This host's KVM lacks the {0} capability cabin needs")]
    MissingCap(&'static str),
}

/// Opens `/dev/kvm` and checks the API version and required capabilities.
pub fn open_kvm() -> Result<Kvm, KvmError> {
    let kvm = Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT => KvmError::NotFound,
        libc::EACCES | libc::EPERM => KvmError::PermissionDenied,
        _ => KvmError::Open(io::Error::from_raw_os_error(e.errno())),
    })?;
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION {
        return Err(KvmError::ApiVersion(version));
    }
    if let Some(missing) = missing_caps(&kvm).first() {
        return Err(KvmError::MissingCap(missing));
    }
    Ok(kvm)
}

/// Names of the required capabilities this KVM lacks.
pub fn missing_caps(kvm: &Kvm) -> Vec<&'static str> {
    REQUIRED_CAPS
        .iter()
        .filter(|(cap, _)| !kvm.check_extension(*cap))
        .map(|(_, name)| *name)
        .collect()
}

/// How guest code runs on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Virtualization {
    /// The CPU has VT-x (`vmx`) or AMD-V (`svm`): guest kernels run natively.
    Hardware(&'static str),
    /// KVM is provided without hardware support (e.g. `kvm_pvm`): guest kernel code
    /// is emulated instruction by instruction and a stock Linux kernel cannot boot.
    Software,
}

/// Tells hardware from software virtualization from `/proc/cpuinfo` flags.
pub fn virtualization_from_cpuinfo(cpuinfo: &str) -> Virtualization {
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, flags)| flags)
        .unwrap_or("");
    for flag in flags.split_whitespace() {
        match flag {
            "vmx" => return Virtualization::Hardware("Intel VT-x"),
            "svm" => return Virtualization::Hardware("AMD-V"),
            _ => {}
        }
    }
    Virtualization::Software
}

/// One line of the `cabin check` report.
#[derive(Debug)]
pub struct CheckLine {
    /// What was checked.
    pub item: &'static str,
    /// Whether it is good enough to boot guests.
    pub ok: bool,
    /// What was found, and the fix when it is not ok.
    pub detail: String,
}

/// Everything `cabin check` looks at, in order. Guests can boot when every line is ok.
pub fn host_report() -> Vec<CheckLine> {
    let mut lines = Vec::new();
    let kvm = Kvm::new();
    match &kvm {
        Ok(_) => lines.push(CheckLine {
            item: "/dev/kvm",
            ok: true,
            detail: "present and opened read/write".into(),
        }),
        Err(e) => {
            let err = match e.errno() {
                libc::ENOENT => KvmError::NotFound,
                libc::EACCES | libc::EPERM => KvmError::PermissionDenied,
                n => KvmError::Open(io::Error::from_raw_os_error(n)),
            };
            lines.push(CheckLine {
                item: "/dev/kvm",
                ok: false,
                detail: crate::error_chain(&err),
            });
        }
    }
    if let Ok(kvm) = &kvm {
        let version = kvm.get_api_version();
        lines.push(CheckLine {
            item: "KVM API version",
            ok: version == KVM_API_VERSION,
            detail: version.to_string(),
        });
        let missing = missing_caps(kvm);
        lines.push(CheckLine {
            item: "KVM capabilities",
            ok: missing.is_empty(),
            detail: if missing.is_empty() {
                format!("all {} required present", REQUIRED_CAPS.len())
            } else {
                format!("missing: {}", missing.join(", "))
            },
        });
        lines.push(CheckLine {
            item: "KVM max vCPUs",
            ok: true,
            detail: kvm.get_max_vcpus().to_string(),
        });
    }
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let pvm = Path::new("/sys/module/kvm_pvm").exists();
    lines.push(match virtualization_from_cpuinfo(&cpuinfo) {
        Virtualization::Hardware(name) => CheckLine {
            item: "CPU virtualization",
            ok: true,
            detail: format!("{name}: guest kernels run natively"),
        },
        Virtualization::Software => CheckLine {
            item: "CPU virtualization",
            ok: false,
            detail: format!(
                "none (no vmx/svm in /proc/cpuinfo{}): KVM here is a software hypervisor that emulates guest kernel code and cannot boot a stock Linux kernel; run guests in the nested sandbox (resources/sandbox/run) or on a host with VT-x/AMD-V",
                if pvm { "; kvm_pvm is loaded" } else { "" }
            ),
        },
    });
    lines.push(
        match fs::OpenOptions::new().read(true).write(true).open(TUN_PATH) {
            Ok(_) => CheckLine {
                item: "TUN",
                ok: true,
                detail: format!("{TUN_PATH} opened (needed for --net later)"),
            },
            Err(e) => CheckLine {
                item: "TUN",
                ok: true,
                detail: format!("{TUN_PATH}: {e} (only needed for networking; modprobe tun)"),
            },
        },
    );
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtualization_with_svm_flag_is_hardware() {
        let cpuinfo = "processor\t: 0\nflags\t\t: fpu vme svm lm\n";
        assert_eq!(
            virtualization_from_cpuinfo(cpuinfo),
            Virtualization::Hardware("AMD-V")
        );
    }

    #[test]
    fn virtualization_with_vmx_flag_is_hardware() {
        let cpuinfo = "flags\t\t: fpu vmx\n";
        assert_eq!(
            virtualization_from_cpuinfo(cpuinfo),
            Virtualization::Hardware("Intel VT-x")
        );
    }

    #[test]
    fn virtualization_without_flags_is_software() {
        assert_eq!(
            virtualization_from_cpuinfo("flags\t\t: fpu vme lm svm_lock\n"),
            Virtualization::Software
        );
        assert_eq!(virtualization_from_cpuinfo(""), Virtualization::Software);
    }
}
