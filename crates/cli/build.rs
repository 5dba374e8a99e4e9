//! Gives both binaries of this package (`conductor` and `conductor-sandbox-init`) the same
//! `CONDUCTOR_BUILD_ID`: a hash of the workspace's sources and lock file. `conductor` runs the
//! helper binary beside it only when that binary answers with its own id, so a helper left from
//! an older build (`cargo run` rebuilds only the binary it runs) is never used.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest.join("../..");
    let mut inputs = vec![root.join("Cargo.lock")];
    if let Ok(crates) = std::fs::read_dir(root.join("crates")) {
        let mut dirs: Vec<PathBuf> = crates.flatten().map(|e| e.path().join("src")).collect();
        dirs.sort();
        inputs.extend(dirs);
    }
    let mut hasher = DefaultHasher::new();
    for input in &inputs {
        println!("cargo:rerun-if-changed={}", input.display());
        hash_tree(input, &mut hasher);
    }
    println!(
        "cargo:rustc-env=CONDUCTOR_BUILD_ID={:016x}",
        hasher.finish()
    );
}

fn hash_tree(path: &Path, hasher: &mut DefaultHasher) {
    if path.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            hash_tree(&path, hasher);
        }
    } else if let Ok(bytes) = std::fs::read(path) {
        hasher.write(path.to_string_lossy().as_bytes());
        hasher.write(&bytes);
    }
}
