//! The host terminal: raw mode while a guest runs, and guest console output.

use std::io::{self, Write};
use std::sync::OnceLock;

use vmm_sys_util::terminal::Terminal;

/// The terminal settings found at start, for [`restore_terminal_in_signal_handler`].
/// Set once, before raw mode and before any seccomp filter; afterwards only read.
static SAVED_TERMIOS: OnceLock<libc::termios> = OnceLock::new();

/// Puts stdin in raw mode while alive when it is a terminal; restores the exact
/// previous settings when dropped, on every path out of the VMM.
pub struct RawTerminal {
    saved: Option<libc::termios>,
}

impl std::fmt::Debug for RawTerminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawTerminal")
            .field("raw", &self.saved.is_some())
            .finish()
    }
}

impl RawTerminal {
    /// Switches stdin to raw mode if it is a tty; otherwise does nothing.
    pub fn new() -> io::Result<Self> {
        // SAFETY: isatty only inspects the descriptor number.
        if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
            return Ok(RawTerminal { saved: None });
        }
        // SAFETY: termios is plain old data; all-zero is a valid value to be overwritten.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: stdin is a tty (checked above) and `saved` is a valid termios to fill.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // A second RawTerminal (none today) would find raw mode; keep the first.
        let _ = SAVED_TERMIOS.set(saved);
        io::stdin()
            .lock()
            .set_raw_mode()
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        Ok(RawTerminal { saved: Some(saved) })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: `saved` was filled by tcgetattr on the same descriptor.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved) };
        }
    }
}

/// Puts the terminal back as the first [`RawTerminal`] found it, for a handler
/// about to end the process (the SIGSYS handler of seccomp), where `Drop` never
/// runs. Async-signal-safe: an atomic load and tcsetattr, no lock, no allocation.
/// Does nothing if stdin was never put in raw mode.
pub fn restore_terminal_in_signal_handler() {
    if let Some(saved) = SAVED_TERMIOS.get() {
        // SAFETY: `saved` is a termios tcgetattr filled for stdin, never written
        // after OnceLock::set published it; tcsetattr only reads it, is
        // async-signal-safe, and every seccomp filter allows it (TCSETS on fd 0).
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved) };
    }
}

/// Guest console output: straight to stdout, flushed on every write so what the
/// guest prints is visible at once.
#[derive(Debug, Default)]
pub struct ConsoleOut;

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut out = io::stdout().lock();
        out.write_all(buf)?;
        out.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().lock().flush()
    }
}
