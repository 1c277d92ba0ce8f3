//! The host side of virtio-net: the TAP file descriptor, and the gate through which
//! the VMM's event loop sees it.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;

use log::warn;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref, ioctl_with_val};

use super::{Error, VNET_HDR_LEN};

/// The TUN/TAP clone device.
pub const TUN_PATH: &str = "/dev/net/tun";
/// Size of an interface name buffer, NUL included (IFNAMSIZ).
const IFNAMSIZ: usize = libc::IFNAMSIZ;
/// Size of the union that follows the name in `struct ifreq` on 64-bit Linux (its
/// largest member is `struct ifmap`, 24 bytes).
const IFREQ_UNION_SIZE: usize = 24;
/// TUNSETIFF flags: a TAP (Ethernet frames), no packet information prefix, a
/// virtio-net header in front of every frame.
const TAP_FLAGS: libc::c_int = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;

/// TUNSETOFFLOAD flags: which offloads frames read from the TAP may use.
pub mod offload {
    /// Partial checksums.
    pub const CSUM: u32 = libc::TUN_F_CSUM;
    /// TCP segmentation offload over IPv4 (needs [`CSUM`]).
    pub const TSO4: u32 = libc::TUN_F_TSO4;
    /// TCP segmentation offload over IPv6 (needs [`CSUM`]).
    pub const TSO6: u32 = libc::TUN_F_TSO6;
    /// UDP fragmentation offload (needs [`CSUM`]).
    pub const UFO: u32 = libc::TUN_F_UFO;
}

/// What the device needs from the host side of its link: [`Tap`], or a mock in tests.
pub trait Backend: Send + fmt::Debug {
    /// The interface name, for messages.
    fn name(&self) -> &str;
    /// The fd that is readable when a frame can be read (or the backend failed).
    fn ready_fd(&self) -> RawFd;
    /// Reads one frame, vnet header included, into `buf` without blocking.
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame, vnet header included, without blocking.
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize>;
    /// Sets the offloads (an [`offload`] mask) that frames read from now on may use.
    fn set_offload(&mut self, flags: u32) -> io::Result<()>;
}

/// An open, attached TAP: nonblocking, IFF_NO_PI, with a [`VNET_HDR_LEN`]-byte
/// virtio-net header on every frame. Closing it detaches from the TAP, which stays
/// (cabin only uses persistent TAPs that someone else created).
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Attaches to the existing TAP `name`. It must exist (TUNSETIFF would create a
    /// transient one otherwise), be a single-queue TAP, and not be open elsewhere.
    pub fn open(name: &str) -> Result<Tap, Error> {
        let ifname = interface_name(name)?;
        check_exists(name, &ifname)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(TUN_PATH)
            .map_err(|source| call_error(name, "open /dev/net/tun", source))?;
        let mut req = IfReq::new(&ifname);
        req.set_flags(TAP_FLAGS);
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`; `req` is a
        // `#[repr(C)]` struct of exactly that size (name then the 24-byte union), lives
        // across the call, and the name in it is NUL-terminated.
        let ret = unsafe { ioctl_with_mut_ref(&file, libc::TUNSETIFF, &mut req) };
        if ret < 0 {
            return Err(call_error(name, "TUNSETIFF", io::Error::last_os_error()));
        }
        let tap = Tap {
            file,
            name: name.to_string(),
        };
        // A TAP made with `ip tuntap add` is persistent. One that is not was created
        // just now by TUNSETIFF: the named one vanished after `check_exists`. Dropping
        // `tap` destroys what we created.
        if tap.flags()? & libc::IFF_PERSIST == 0 {
            return Err(Error::NoSuchDevice {
                tap: name.to_string(),
                call: "TUNSETIFF",
            });
        }
        tap.set_vnet_hdr_size()?;
        Ok(tap)
    }

    /// The interface flags (TUNGETIFF).
    fn flags(&self) -> Result<libc::c_int, Error> {
        let mut req = IfReq::default();
        // SAFETY: TUNGETIFF writes one `struct ifreq`; `req` is a `#[repr(C)]` struct of
        // exactly that size that lives across the call.
        let ret = unsafe { ioctl_with_mut_ref(&self.file, libc::TUNGETIFF, &mut req) };
        if ret < 0 {
            return Err(call_error(
                &self.name,
                "TUNGETIFF",
                io::Error::last_os_error(),
            ));
        }
        Ok(req.flags())
    }

    /// TUNSETVNETHDRSZ: every frame carries a `virtio_net_hdr_v1`.
    fn set_vnet_hdr_size(&self) -> Result<(), Error> {
        // VNET_HDR_LEN is 12.
        let size = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer; `size` is an int
        // that lives across the call.
        let ret = unsafe { ioctl_with_ref(&self.file, libc::TUNSETVNETHDRSZ, &size) };
        if ret < 0 {
            return Err(call_error(
                &self.name,
                "TUNSETVNETHDRSZ",
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

impl Backend for Tap {
    fn name(&self) -> &str {
        &self.name
    }

    fn ready_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.file.write(frame)
    }

    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value and touches no memory of
        // ours; the kernel validates the flags.
        let ret =
            unsafe { ioctl_with_val(&self.file, libc::TUNSETOFFLOAD, libc::c_ulong::from(flags)) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Which offloads `backend` accepts (an [`offload`] mask), found by trying them; the
/// backend is left with none enabled. Everything else needs [`offload::CSUM`].
pub fn probe_offloads(backend: &mut dyn Backend) -> u32 {
    let mut supported = 0;
    if backend.set_offload(offload::CSUM).is_ok() {
        supported = offload::CSUM;
        for extra in [offload::TSO4, offload::TSO6, offload::UFO] {
            if backend.set_offload(supported | extra).is_ok() {
                supported |= extra;
            }
        }
    }
    if let Err(e) = backend.set_offload(0) {
        warn!(
            "TAP {}: cannot turn offloads off after probing (TUNSETOFFLOAD): {e}",
            backend.name()
        );
    }
    supported
}

/// An epoll set holding at most one fd. Its own fd is readable exactly when that fd
/// is in the set and readable (or failed), so a level-triggered watcher of the gate
/// sees the inner fd only while the gate is open. The device opens the gate when it
/// wants frames and closes it when it has nowhere to put them.
#[derive(Debug)]
pub struct ReadGate {
    epoll: Epoll,
    open: bool,
}

impl ReadGate {
    /// A closed gate.
    pub fn new() -> io::Result<ReadGate> {
        Ok(ReadGate {
            epoll: Epoll::new()?,
            open: false,
        })
    }

    /// The fd to watch (for readability).
    pub fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Whether `fd` is in the set.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Puts `fd` in the set, if it is not there yet. The caller keeps `fd` open while
    /// the gate is open.
    pub fn open(&mut self, fd: RawFd) -> io::Result<()> {
        if !self.open {
            self.epoll
                .ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, 0))?;
            self.open = true;
        }
        Ok(())
    }

    /// Takes `fd` out of the set, if it is there.
    pub fn close(&mut self, fd: RawFd) -> io::Result<()> {
        if self.open {
            self.epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default())?;
            self.open = false;
        }
        Ok(())
    }
}

/// `struct ifreq`: an interface name and a 24-byte union, of which TUNSETIFF and
/// TUNGETIFF use `ifr_flags` (a short) and SIOCGIFINDEX `ifr_ifindex` (an int), both
/// at its start. Byte arrays instead of libc's union keep the accessors safe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    union: [u8; IFREQ_UNION_SIZE],
}

impl IfReq {
    fn new(name: &[u8; IFNAMSIZ]) -> IfReq {
        IfReq {
            name: *name,
            ..IfReq::default()
        }
    }

    /// `ifr_flags`; the interface flags all fit in a short.
    fn set_flags(&mut self, flags: libc::c_int) {
        let flags = flags as libc::c_short;
        self.union[..2].copy_from_slice(&flags.to_ne_bytes());
    }

    fn flags(&self) -> libc::c_int {
        libc::c_int::from(libc::c_short::from_ne_bytes([self.union[0], self.union[1]]))
    }
}

/// `name` as a NUL-padded interface name, checked like the kernel's
/// `dev_valid_name`.
fn interface_name(name: &str) -> Result<[u8; IFNAMSIZ], Error> {
    let invalid = |reason| Error::InvalidName {
        tap: name.to_string(),
        reason,
    };
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err(invalid("it is empty"));
    }
    if bytes.len() >= IFNAMSIZ {
        return Err(invalid("it is longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(invalid("it is . or .."));
    }
    if bytes
        .iter()
        .any(|&b| b == 0 || b == b'/' || b == b':' || b.is_ascii_whitespace())
    {
        return Err(invalid("it contains a NUL, '/', ':' or whitespace"));
    }
    let mut out = [0u8; IFNAMSIZ];
    out[..bytes.len()].copy_from_slice(bytes);
    Ok(out)
}

/// Fails with [`Error::NoSuchDevice`] unless an interface `ifname` exists in this
/// network namespace (SIOCGIFINDEX, as `if_nametoindex` does).
fn check_exists(name: &str, ifname: &[u8; IFNAMSIZ]) -> Result<(), Error> {
    let socket =
        UnixDatagram::unbound().map_err(|source| call_error(name, "socket(AF_UNIX)", source))?;
    let mut req = IfReq::new(ifname);
    // SAFETY: SIOCGIFINDEX reads the NUL-terminated name from and writes an int into
    // one `struct ifreq`; `req` is a `#[repr(C)]` struct of exactly that size that
    // lives across the call.
    let ret = unsafe { ioctl_with_mut_ref(&socket, libc::SIOCGIFINDEX, &mut req) };
    if ret < 0 {
        return Err(call_error(name, "SIOCGIFINDEX", io::Error::last_os_error()));
    }
    Ok(())
}

/// The [`enum@Error`] for `call` failing on TAP `name` with `source`.
fn call_error(name: &str, call: &'static str, source: io::Error) -> Error {
    let tap = name.to_string();
    match source.raw_os_error() {
        Some(libc::ENODEV) => Error::NoSuchDevice { tap, call },
        Some(libc::EBUSY) => Error::Busy { tap, call },
        Some(libc::EPERM | libc::EACCES) => Error::PermissionDenied { tap, call, source },
        Some(libc::EINVAL) if call == "TUNSETIFF" => Error::NotATap { tap, call },
        _ => Error::Setup { tap, call, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    /// Whether `fd` is reported readable by a level-triggered epoll, as the VMM's
    /// event loop would see it.
    fn readable(fd: RawFd) -> bool {
        let watcher = Epoll::new().unwrap();
        watcher
            .ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, 0))
            .unwrap();
        let mut events = [EpollEvent::default(); 1];
        watcher.wait(0, &mut events).unwrap() > 0
    }

    #[test]
    fn ifreq_size_matches_struct_ifreq() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn ifreq_flags_round_trip() {
        let mut req = IfReq::default();
        req.set_flags(TAP_FLAGS | libc::IFF_PERSIST);
        assert_eq!(req.flags(), TAP_FLAGS | libc::IFF_PERSIST);
    }

    #[test]
    fn interface_name_valid_nul_padded() {
        let name = interface_name("tap0").unwrap();
        assert_eq!(&name[..5], b"tap0\0");
        assert!(name[4..].iter().all(|&b| b == 0));
    }

    #[test]
    fn interface_name_longest_allowed_fits() {
        assert!(interface_name("abcdefghijklmno").is_ok());
    }

    #[test]
    fn interface_name_invalid_rejected() {
        for bad in [
            "",
            "abcdefghijklmnop",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\0b",
        ] {
            let err = interface_name(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidName { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn call_error_maps_errno_to_variant() {
        let e = |errno| io::Error::from_raw_os_error(errno);
        assert!(matches!(
            call_error("t", "TUNSETIFF", e(libc::EBUSY)),
            Error::Busy { .. }
        ));
        assert!(matches!(
            call_error("t", "SIOCGIFINDEX", e(libc::ENODEV)),
            Error::NoSuchDevice { .. }
        ));
        assert!(matches!(
            call_error("t", "TUNSETIFF", e(libc::EPERM)),
            Error::PermissionDenied { .. }
        ));
        assert!(matches!(
            call_error("t", "open /dev/net/tun", e(libc::EACCES)),
            Error::PermissionDenied { .. }
        ));
        assert!(matches!(
            call_error("t", "TUNSETIFF", e(libc::EINVAL)),
            Error::NotATap { .. }
        ));
        assert!(matches!(
            call_error("t", "TUNSETVNETHDRSZ", e(libc::EINVAL)),
            Error::Setup { .. }
        ));
    }

    #[test]
    fn open_missing_interface_no_such_device() {
        let err = Tap::open("cbnosuch0").unwrap_err();
        assert!(matches!(err, Error::NoSuchDevice { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("cbnosuch0"), "{text}");
        assert!(
            text.contains("ip tuntap add dev cbnosuch0 mode tap"),
            "{text}"
        );
    }

    #[test]
    fn open_loopback_not_a_tap() {
        // "lo" exists in every network namespace and is not a TAP. Without the rights
        // to attach at all, the refusal is a permission error instead.
        let err = Tap::open("lo").unwrap_err();
        assert!(
            matches!(err, Error::NotATap { .. } | Error::PermissionDenied { .. }),
            "{err}"
        );
    }

    #[test]
    fn gate_closed_hides_readable_fd() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        evt.write(1).unwrap();
        let gate = ReadGate::new().unwrap();

        assert!(!gate.is_open());
        assert!(!readable(gate.as_raw_fd()));
    }

    #[test]
    fn gate_open_shows_readiness_of_fd() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut gate = ReadGate::new().unwrap();
        gate.open(evt.as_raw_fd()).unwrap();
        assert!(!readable(gate.as_raw_fd()), "fd not readable yet");

        evt.write(1).unwrap();
        assert!(readable(gate.as_raw_fd()));
        // Level-triggered: still readable until the fd is drained.
        assert!(readable(gate.as_raw_fd()));

        evt.read().unwrap();
        assert!(!readable(gate.as_raw_fd()));
    }

    #[test]
    fn gate_close_then_reopen_follows_fd() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        evt.write(1).unwrap();
        let mut gate = ReadGate::new().unwrap();
        gate.open(evt.as_raw_fd()).unwrap();
        assert!(readable(gate.as_raw_fd()));

        gate.close(evt.as_raw_fd()).unwrap();
        assert!(!gate.is_open());
        assert!(!readable(gate.as_raw_fd()));

        gate.open(evt.as_raw_fd()).unwrap();
        assert!(readable(gate.as_raw_fd()));
    }

    #[test]
    fn gate_open_and_close_are_idempotent() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut gate = ReadGate::new().unwrap();

        gate.open(evt.as_raw_fd()).unwrap();
        gate.open(evt.as_raw_fd()).unwrap();
        gate.close(evt.as_raw_fd()).unwrap();
        gate.close(evt.as_raw_fd()).unwrap();

        assert!(!gate.is_open());
    }
}
