//! Replays every seed of `corpus/<target>/` and every crash of `crashes/<target>/`
//! through its target, so that a fixed crash cannot come back unnoticed. Runs in
//! `cargo test --workspace` (make unit); needs no AFL.

use std::fs;
use std::path::{Path, PathBuf};

use cabin_fuzz::TARGETS;

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.is_file())
        .filter(|path| path.file_name().is_some_and(|name| name != "README.md"))
        .collect();
    files.sort();
    files
}

#[test]
fn replay_corpora_and_crashes_through_every_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seeds = 0;
    for (name, target) in TARGETS {
        let corpus = inputs(&root.join("corpus").join(name));
        assert!(
            !corpus.is_empty(),
            "target {name} has no seed in corpus/{name}"
        );
        seeds += corpus.len();
        for path in corpus
            .iter()
            .chain(&inputs(&root.join("crashes").join(name)))
        {
            let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            eprintln!("replay {name} {}", path.display());
            target(&data);
        }
    }
    assert!(seeds >= TARGETS.len());
}

#[test]
fn every_target_survives_empty_and_short_inputs() {
    for (_, target) in TARGETS {
        for len in 0..8 {
            target(&vec![0xff; len]);
            target(&vec![0; len]);
        }
    }
}
