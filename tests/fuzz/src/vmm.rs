//! Targets for the VMM's parsers: the API server (through its `fuzzing` shim), the
//! config file, the command line and the kernel and initrd loaders.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use clap::Parser;
use devices::GuestMemoryMmap;
use vm_memory::GuestAddress;
use vmm::api::model::{load_config_file, to_document};
use vmm::api::server::fuzzing;
use vmm::cli::{parse_disk, parse_mac, parse_net, Cli, Command};
use vmm::config::{HostLimits, VmConfig};
use vmm::loader::{build_cmdline, load_initrd, load_kernel};
use vmm_sys_util::tempfile::TempFile;

/// Guest memory of the loader target: 16 MiB, enough for a small kernel above
/// 1 MiB and an initrd below the top.
const LOADER_MEM_MIB: u64 = 16;
/// What the config and cli targets' configurations are validated against.
const HOST: HostLimits = HostLimits {
    max_vcpus: 64,
    mem_total_bytes: 4 << 30,
};

/// The API server's HTTP framing, routing and endpoints over one connection's bytes.
pub fn http(data: &[u8]) {
    fuzzing::http(data);
}

/// One API request body for the endpoint the first byte picks.
pub fn api(data: &[u8]) {
    fuzzing::api(data);
}

thread_local! {
    /// A file the path-based targets write their input to, one per thread.
    static INPUT_FILE: RefCell<Option<TempFile>> = const { RefCell::new(None) };
}

/// Writes `data` to this thread's input file (replacing what it held); its path.
fn input_file(data: &[u8]) -> Option<PathBuf> {
    INPUT_FILE.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            *slot = Some(TempFile::new().ok()?);
        }
        let file = slot.as_ref()?;
        file.as_file().set_len(0).ok()?;
        file.as_file().write_all_at(data, 0).ok()?;
        Some(file.as_path().to_path_buf())
    })
}

/// A `--config-file`: loaded over the defaults (and over a base with a kernel, as
/// when `--kernel` is given too), validated, and turned back into the document
/// `GET /vm/config` shows.
pub fn config(data: &[u8]) {
    let Some(path) = input_file(data) else {
        return;
    };
    let with_kernel = VmConfig {
        kernel: Some(PathBuf::from("/proc/self/exe")),
        ..VmConfig::default()
    };
    for base in [VmConfig::default(), with_kernel] {
        if let Ok(config) = load_config_file(&path, base) {
            let _ = config.validate(&HOST);
            let _ = config.validate_files();
            let _ = serde_json::to_string(&to_document(&config));
        }
    }
}

/// A command line: arguments separated by NUL bytes after `cabin`, parsed by clap
/// with cabin's value parsers; a `run` becomes a configuration and is validated.
/// Each argument also goes through the `--disk`, `--net` and MAC parsers directly.
pub fn cli(data: &[u8]) {
    let args: Vec<&OsStr> = data.split(|&b| b == 0).map(OsStr::from_bytes).collect();
    for arg in &args {
        if let Some(text) = arg.to_str() {
            let _ = parse_disk(text);
            let _ = parse_net(text);
            let _ = parse_mac(text);
        }
    }
    let argv = std::iter::once(OsStr::new("cabin")).chain(args.iter().copied());
    if let Ok(Cli {
        command: Command::Run(run),
        ..
    }) = Cli::try_parse_from(argv)
    {
        let config = VmConfig::from(run);
        let _ = config.validate(&HOST);
        let _ = config.validate_files();
    }
}

/// A kernel image (ELF vmlinux or bzImage) when the first byte is even, else an
/// initrd, loaded into 16 MiB of guest memory; the kernel's command line is the
/// image's first bytes up to a NUL.
pub fn loader(data: &[u8]) {
    let Some((&kind, image)) = data.split_first() else {
        return;
    };
    let Some(path) = input_file(image) else {
        return;
    };
    let size = usize::try_from(LOADER_MEM_MIB << 20).unwrap_or(0);
    let Ok(mem) = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]) else {
        return;
    };
    if kind % 2 == 0 {
        let _ = load_kernel(&mem, &path, LOADER_MEM_MIB);
        let text = image.split(|&b| b == 0).next().unwrap_or_default();
        let _ = build_cmdline(&String::from_utf8_lossy(text));
    } else {
        let _ = load_initrd(&mem, &path);
    }
}

/// A snapshot state file. The first byte picks the form: 0, the rest is a whole
/// state file (header checks); anything else, the rest is a payload wrapped in a
/// valid header, so the fuzzer reaches the decoder behind the checksum. A state
/// that decodes is encoded again.
pub fn snapshot(data: &[u8]) {
    use vmm::snapshot::{Snapshot, MAGIC, VERSION};
    let Some((&form, rest)) = data.split_first() else {
        return;
    };
    let path = std::path::Path::new("fuzz");
    let decoded = if form == 0 {
        Snapshot::decode(path, rest)
    } else {
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&VERSION.to_le_bytes());
        file.extend_from_slice(&(rest.len() as u64).to_le_bytes());
        file.extend_from_slice(&crc32fast::hash(rest).to_le_bytes());
        file.extend_from_slice(rest);
        Snapshot::decode(path, &file)
    };
    if let Ok(snapshot) = decoded {
        let _ = postcard::to_stdvec(&snapshot);
    }
}
