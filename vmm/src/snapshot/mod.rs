//! Snapshots: a paused VM's state in one file, its RAM in another.
//!
//! The state file is a 24-byte header (magic, format version, payload length,
//! CRC-32 of the payload) followed by the payload: a [`Snapshot`] in postcard
//! encoding. A file that is not a cabin snapshot, was cut short or corrupted, or
//! comes from a newer cabin is refused with one line saying which, before any of
//! it is decoded. The RAM file is flat guest RAM (see [`memory`]).

pub mod cpu;
pub mod memory;
pub mod restore;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use devices::legacy::{AcpiPmState, I8042State, SerialState};
use devices::virtio::mmio::MmioState;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::VmConfig;
use cpu::{VcpuState, VmState};
use memory::MemoryLayout;

/// The state file in a snapshot directory (`cabin ctl snapshot DIR`).
pub const STATE_FILE: &str = "state";
/// The memory file in a snapshot directory.
pub const MEMORY_FILE: &str = "memory";

/// The first bytes of every cabin state file.
pub const MAGIC: [u8; 8] = *b"CABINSNP";
/// The format this cabin writes, and the only one it reads. 2: the configuration
/// has a vsock device.
pub const VERSION: u32 = 2;
/// magic, version, payload length, CRC-32.
const HEADER_LEN: usize = 8 + 4 + 8 + 4;
/// A state file's payload is far smaller than this (a few KiB per vCPU).
const MAX_PAYLOAD: u64 = 64 << 20;

/// A paused VM, everything but its RAM.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// How the VM was configured (disks, TAPs, vCPUs, memory...).
    pub config: VmConfig,
    /// Guest RAM's regions, in the memory file's order.
    pub memory: MemoryLayout,
    /// Interrupt controllers, PIT, kvmclock.
    pub vm: VmState,
    /// Each vCPU, in index order.
    pub vcpus: Vec<VcpuState>,
    /// COM1.
    pub serial: SerialState,
    /// The keyboard controller.
    pub i8042: I8042State,
    /// The ACPI power device.
    pub acpi_pm: AcpiPmState,
    /// Each virtio-mmio transport and its device, in slot order.
    pub devices: Vec<MmioState>,
}

/// Why a state file could not be written or read.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// The file could not be read.
    #[error("Cannot read the snapshot file {0}")]
    Read(PathBuf, #[source] io::Error),
    /// The file could not be written.
    #[error("Cannot write the snapshot file {0}")]
    Write(PathBuf, #[source] io::Error),
    /// Not a cabin state file.
    #[error("{0} is not a cabin snapshot (its first bytes are not cabin's): give the snapshot_path that /snapshot/create wrote")]
    Magic(PathBuf),
    /// Written by a newer cabin.
    #[error("{path} is a version {found} snapshot, and this cabin reads versions up to {VERSION}: restore it with the cabin that made it")]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
    /// Written by an older cabin, in a format this one no longer reads.
    #[error("{path} is a version {found} snapshot from an older cabin, and this cabin reads version {VERSION}: restore it with the cabin that made it, or take the snapshot again")]
    OldVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
    /// Shorter than the header itself.
    #[error("{path} is cut short: it holds {found} bytes, less than the {HEADER_LEN}-byte header of a cabin snapshot")]
    Header {
        /// The file.
        path: PathBuf,
        /// Its size.
        found: usize,
    },
    /// A version no cabin writes.
    #[error("{0} is corrupted: its header gives format version 0, which no cabin writes")]
    VersionZero(PathBuf),
    /// Shorter or longer than its header says.
    #[error("{path} is cut short or has extra bytes: its header announces {announced} bytes of state, the file holds {found}")]
    Length {
        /// The file.
        path: PathBuf,
        /// Payload bytes the header announces.
        announced: u64,
        /// Payload bytes present.
        found: u64,
    },
    /// The checksum does not match.
    #[error("{0} is corrupted: the checksum of its state does not match")]
    Checksum(PathBuf),
    /// The payload does not decode (a bug, or a crafted file).
    #[error("{0} cannot be decoded: {1}")]
    Decode(PathBuf, String),
    /// The payload could not be encoded (cannot happen short of a bug).
    #[error("Cannot encode the snapshot: {0}")]
    Encode(String),
}

impl Snapshot {
    /// Writes the state file at `path` (through a temporary file renamed into place).
    /// Returns its size in bytes.
    pub fn write(&self, path: &Path) -> Result<u64, SnapshotError> {
        let payload =
            postcard::to_stdvec(self).map_err(|e| SnapshotError::Encode(e.to_string()))?;
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        let err = |e| SnapshotError::Write(path.to_owned(), e);
        let partial = memory::partial_path(path);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&partial)
            .map_err(err)?;
        file.write_all(&bytes).map_err(err)?;
        file.sync_all().map_err(err)?;
        std::fs::rename(&partial, path).map_err(err)?;
        Ok(bytes.len() as u64)
    }

    /// Reads and checks the state file at `path`.
    pub fn read(path: &Path) -> Result<Snapshot, SnapshotError> {
        let err = |e| SnapshotError::Read(path.to_owned(), e);
        let mut file = File::open(path).map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        if size > MAX_PAYLOAD + HEADER_LEN as u64 {
            return Err(SnapshotError::Length {
                path: path.to_owned(),
                announced: MAX_PAYLOAD,
                found: size,
            });
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(err)?;
        Self::decode(path, &bytes)
    }

    /// Checks and decodes the bytes of a state file (`path` names it in errors).
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        let path = || path.to_owned();
        if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
            return Err(SnapshotError::Magic(path()));
        }
        let field = |at: usize, len: usize| bytes.get(at..at + len);
        let (Some(version), Some(length), Some(crc)) = (field(8, 4), field(12, 8), field(20, 4))
        else {
            return Err(SnapshotError::Header {
                path: path(),
                found: bytes.len(),
            });
        };
        let version = u32::from_le_bytes(version.try_into().unwrap_or_default());
        if version == 0 {
            return Err(SnapshotError::VersionZero(path()));
        }
        if version > VERSION {
            return Err(SnapshotError::Version {
                path: path(),
                found: version,
            });
        }
        if version < VERSION {
            return Err(SnapshotError::OldVersion {
                path: path(),
                found: version,
            });
        }
        let announced = u64::from_le_bytes(length.try_into().unwrap_or_default());
        let payload = &bytes[HEADER_LEN..];
        if announced != payload.len() as u64 {
            return Err(SnapshotError::Length {
                path: path(),
                announced,
                found: payload.len() as u64,
            });
        }
        let crc = u32::from_le_bytes(crc.try_into().unwrap_or_default());
        if crc32fast::hash(payload) != crc {
            return Err(SnapshotError::Checksum(path()));
        }
        postcard::from_bytes(payload).map_err(|e| SnapshotError::Decode(path(), e.to_string()))
    }
}
