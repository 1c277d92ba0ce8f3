//! x86_64 boot
