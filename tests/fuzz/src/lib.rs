//! cabin's fuzz targets: each takes the fuzzer's bytes, builds the input of one of
//! cabin's parsers or device models from them, and calls the very code production
//! calls. A target returns normally on any input; a panic, an abort or a hang is
//! the bug the fuzzer looks for.
//!
//! `src/bin/<target>.rs` wraps each in AFL++'s loop (feature `afl`, built by
//! `tests/fuzz/run.sh`); `tests/replay.rs` runs every file of `corpus/<target>/` and
//! `crashes/<target>/` through them in the ordinary test suite.

mod devices;
mod queue;
mod vmm;

pub use devices::{block, console, mmio, net, rng, vsock};
pub use vmm::{api, cli, config, http, loader, snapshot};

/// A fuzz target: any bytes in, nothing out.
pub type Target = fn(&[u8]);

/// Every target by name; the name is also its binary and its corpus directory.
pub const TARGETS: [(&str, Target); 12] = [
    ("block", block),
    ("net", net),
    ("console", console),
    ("rng", rng),
    ("vsock", vsock),
    ("mmio", mmio),
    ("http", http),
    ("api", api),
    ("config", config),
    ("cli", cli),
    ("loader", loader),
    ("snapshot", snapshot),
];
