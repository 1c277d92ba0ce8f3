//! Putting the kernel, the initrd and the command line into guest memory.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

use arch::layout::{CMDLINE_MAX_SIZE, HIMEM_START};
use devices::GuestMemoryMmap;
use linux_loader::bootparam::setup_header;
use linux_loader::cmdline::Cmdline;
use linux_loader::loader::{bzimage::BzImage, elf::Elf, KernelLoader};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress};

/// Offset of the 64-bit entry point from the start of a bzImage's protected-mode code
/// (boot protocol 2.12+, `startup_64` in arch/x86/boot/compressed/head_64.S).
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// `xloadflags` bit: the kernel has a 64-bit entry point at +0x200.
const XLF_KERNEL_64: u16 = 1 << 0;

/// Failures while loading boot images.
#[derive(Debug, Error)]
pub enum LoaderError {
    /// Opening the kernel or initrd failed after validation (raced with a change).
    #[error("Cannot open {0}")]
    Open(PathBuf, #[source] io::Error),
    /// Neither an ELF nor a bzImage.
    #[error("Kernel {0} is not a kernel image cabin can boot: give an uncompressed ELF vmlinux or a bzImage (x86_64)")]
    NotAKernel(PathBuf),
    /// An ELF file for another machine or word size.
    #[error("Kernel {path} is an ELF file for another machine (class {class}, e_machine {machine}): give an x86_64 vmlinux or bzImage")]
    WrongElfMachine {
        /// Kernel path.
        path: PathBuf,
        /// EI_CLASS.
        class: u8,
        /// e_machine.
        machine: u16,
    },
    /// A bzImage without a 64-bit entry point.
    #[error("Kernel {0} is a bzImage without a 64-bit entry point: build it for x86_64")]
    Not64Bit(PathBuf),
    /// A recognised image that does not fit or is damaged.
    #[error("Kernel {path} cannot be loaded into {mem_mib} MiB of guest memory (is it truncated, or is --memory too small?)")]
    Load {
        /// Kernel path.
        path: PathBuf,
        /// Guest memory size.
        mem_mib: u64,
        /// What linux-loader said.
        #[source]
        source: linux_loader::loader::Error,
    },
    /// The initrd is larger than the low memory that can hold it.
    #[error("Initrd {path} ({size} bytes) does not fit in guest memory: give a larger --memory or a smaller initrd")]
    InitrdTooLarge {
        /// Initrd path.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Placement error.
        #[source]
        source: arch::boot::Error,
    },
    /// Reading the initrd into guest memory failed.
    #[error("Cannot read initrd {0} into guest memory")]
    InitrdRead(PathBuf, #[source] vm_memory::GuestMemoryError),
    /// The command line does not fit the boot protocol's limit.
    #[error("Kernel command line is {len} bytes, longer than the {max} bytes the kernel accepts: shorten --cmdline")]
    CmdlineTooLong {
        /// Its length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The command line has a character the kernel cannot take.
    #[error("Kernel command line is not valid: it must be printable ASCII without NUL or newline")]
    CmdlineInvalid(#[source] linux_loader::cmdline::Error),
    /// Writing the command line into guest memory failed.
    #[error("Cannot write the kernel command line into guest memory")]
    CmdlineWrite(#[source] linux_loader::loader::Error),
}

/// Kernel image formats cabin boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// Uncompressed ELF `vmlinux`.
    Elf,
    /// Compressed `bzImage`.
    BzImage,
}

/// Where a loaded kernel starts, and what the zero page needs from it.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    /// Image format.
    pub format: KernelFormat,
    /// 64-bit entry point.
    pub entry: GuestAddress,
    /// The bzImage setup header, copied into the zero page.
    pub setup_header: Option<setup_header>,
}

/// Loads an ELF vmlinux or a bzImage at [`HIMEM_START`].
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    path: &Path,
    mem_mib: u64,
) -> Result<LoadedKernel, LoaderError> {
    let mut file = File::open(path).map_err(|e| LoaderError::Open(path.to_owned(), e))?;
    check_elf_machine(&mut file, path)?;
    let himem = Some(GuestAddress(HIMEM_START));
    let load_err = |source| LoaderError::Load {
        path: path.to_owned(),
        mem_mib,
        source,
    };
    match Elf::load(mem, None, &mut file, himem) {
        Ok(result) => {
            return Ok(LoadedKernel {
                format: KernelFormat::Elf,
                entry: result.kernel_load,
                setup_header: None,
            })
        }
        Err(linux_loader::loader::Error::Elf(
            linux_loader::loader::elf::Error::InvalidElfMagicNumber
            | linux_loader::loader::elf::Error::ReadElfHeader,
        )) => {}
        Err(e) => return Err(load_err(e)),
    }
    match BzImage::load(mem, None, &mut file, himem) {
        Ok(result) => {
            let header = result
                .setup_header
                .ok_or_else(|| LoaderError::NotAKernel(path.to_owned()))?;
            if header.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(LoaderError::Not64Bit(path.to_owned()));
            }
            let entry = result
                .kernel_load
                .0
                .checked_add(BZIMAGE_64BIT_ENTRY_OFFSET)
                .map(GuestAddress)
                .ok_or_else(|| LoaderError::NotAKernel(path.to_owned()))?;
            Ok(LoadedKernel {
                format: KernelFormat::BzImage,
                entry,
                setup_header: Some(header),
            })
        }
        Err(linux_loader::loader::Error::Bzimage(
            linux_loader::loader::bzimage::Error::InvalidBzImage
            | linux_loader::loader::bzimage::Error::ReadBzImageHeader
            | linux_loader::loader::bzimage::Error::SeekBzImageHeader,
        )) => Err(LoaderError::NotAKernel(path.to_owned())),
        Err(e) => Err(load_err(e)),
    }
}

/// ELF identification: magic, class (2 = 64-bit) and `e_machine` (62 = x86_64).
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELF_CLASS_64: u8 = 2;
const ELF_MACHINE_X86_64: u16 = 62;

/// linux-loader does not check the ELF class or machine; refuse a 32-bit or foreign
/// ELF here with a message that says so.
fn check_elf_machine(file: &mut File, path: &Path) -> Result<(), LoaderError> {
    let mut ident = [0u8; 20];
    let n = file
        .read(&mut ident)
        .map_err(|e| LoaderError::Open(path.to_owned(), e))?;
    file.rewind()
        .map_err(|e| LoaderError::Open(path.to_owned(), e))?;
    if n < ident.len() || &ident[..4] != ELF_MAGIC {
        return Ok(());
    }
    let machine = u16::from_le_bytes([ident[18], ident[19]]);
    if ident[4] != ELF_CLASS_64 || machine != ELF_MACHINE_X86_64 {
        return Err(LoaderError::WrongElfMachine {
            path: path.to_owned(),
            class: ident[4],
            machine,
        });
    }
    Ok(())
}

/// Loads the initrd as high in low memory as it fits; returns its address and size.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
) -> Result<(GuestAddress, usize), LoaderError> {
    let mut file = File::open(path).map_err(|e| LoaderError::Open(path.to_owned(), e))?;
    let size = file
        .metadata()
        .map_err(|e| LoaderError::Open(path.to_owned(), e))?
        .len();
    let too_large = |source| LoaderError::InitrdTooLarge {
        path: path.to_owned(),
        size,
        source,
    };
    let size_usize = usize::try_from(size).map_err(|_| {
        too_large(arch::boot::Error::InitrdTooLarge {
            size: usize::MAX,
            available: 0,
        })
    })?;
    let addr = arch::boot::initrd_load_addr(mem, size_usize).map_err(too_large)?;
    mem.read_exact_volatile_from(addr, &mut file, size_usize)
        .map_err(|e| LoaderError::InitrdRead(path.to_owned(), e))?;
    Ok((addr, size_usize))
}

/// Builds the kernel command line from what the user gave.
pub fn build_cmdline(user: &str) -> Result<Cmdline, LoaderError> {
    // The boot protocol limit includes the terminating NUL.
    let max = CMDLINE_MAX_SIZE - 1;
    if user.len() > max {
        return Err(LoaderError::CmdlineTooLong {
            len: user.len(),
            max,
        });
    }
    let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE).map_err(LoaderError::CmdlineInvalid)?;
    let trimmed = user.trim();
    if !trimmed.is_empty() {
        cmdline
            .insert_str(trimmed)
            .map_err(LoaderError::CmdlineInvalid)?;
    }
    Ok(cmdline)
}

/// Writes the command line at `addr`; returns its size including the NUL.
pub fn write_cmdline(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    cmdline: &Cmdline,
) -> Result<usize, LoaderError> {
    linux_loader::loader::load_cmdline(mem, addr, cmdline).map_err(LoaderError::CmdlineWrite)?;
    let len = cmdline
        .as_cstring()
        .map_err(LoaderError::CmdlineInvalid)?
        .as_bytes_with_nul()
        .len();
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_cmdline_default_round_trips() {
        let cmdline = build_cmdline(crate::config::DEFAULT_CMDLINE).unwrap();
        assert_eq!(
            cmdline.as_cstring().unwrap().to_str().unwrap(),
            crate::config::DEFAULT_CMDLINE
        );
    }

    #[test]
    fn build_cmdline_at_limit_is_accepted_and_over_is_refused() {
        let max = CMDLINE_MAX_SIZE - 1;
        assert!(build_cmdline(&"a".repeat(max)).is_ok());
        let err = build_cmdline(&"a".repeat(max + 1)).unwrap_err();
        assert!(matches!(err, LoaderError::CmdlineTooLong { len, .. } if len == max + 1));
    }

    #[test]
    fn build_cmdline_with_newline_is_refused() {
        assert!(matches!(
            build_cmdline("console=ttyS0\nquiet"),
            Err(LoaderError::CmdlineInvalid(_))
        ));
    }

    fn guest_mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap()
    }

    #[test]
    fn load_kernel_with_garbage_says_not_a_kernel() {
        let path = std::env::temp_dir().join(format!("cabin-loader-{}", std::process::id()));
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = load_kernel(&guest_mem(), &path, 64).unwrap_err();
        assert!(matches!(err, LoaderError::NotAKernel(_)), "{err:?}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn load_kernel_with_32bit_elf_is_refused() {
        let path = std::env::temp_dir().join(format!("cabin-loader-elf32-{}", std::process::id()));
        let mut image = vec![0u8; 4096];
        image[..4].copy_from_slice(ELF_MAGIC);
        image[4] = 1; // ELFCLASS32
        image[5] = 1; // little endian
        image[18] = 3; // EM_386
        std::fs::write(&path, &image).unwrap();
        let err = load_kernel(&guest_mem(), &path, 64).unwrap_err();
        assert!(
            matches!(
                err,
                LoaderError::WrongElfMachine {
                    class: 1,
                    machine: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn load_kernel_with_empty_file_says_not_a_kernel() {
        let path = std::env::temp_dir().join(format!("cabin-loader-empty-{}", std::process::id()));
        std::fs::write(&path, b"").unwrap();
        let err = load_kernel(&guest_mem(), &path, 64).unwrap_err();
        assert!(matches!(err, LoaderError::NotAKernel(_)), "{err:?}");
        std::fs::remove_file(path).unwrap();
    }
}
