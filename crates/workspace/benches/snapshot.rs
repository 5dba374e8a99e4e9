//! Snapshot create and restore against `tar -cf - | zstd` and `zstd -d | tar -x` of the same
//! tree in the same run, the incremental snapshot after a one-file change, and the space of 10
//! snapshots of a slowly changing tree against 10 tarballs.
//!
//! Run: `cargo bench -p conductor-workspace --bench snapshot`. The tree is 1 GiB in 10 000
//! files (half of each file random, half text-like, sizes spread from 1 KiB to ~1 MiB);
//! `CONDUCTOR_BENCH_SCALE=0.1` scales bytes and file count down; `CONDUCTOR_BENCH_DIR` picks
//! where it is written (default /var/tmp). Needs `tar` and `zstd` (apt-get install zstd).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench binary: a failed unwrap is a failed run

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use conductor_workspace::{SnapshotOptions, SnapshotStore, SnapshotStoreOptions, WorkspaceId};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn main() {
    let scale: f64 = std::env::var("CONDUCTOR_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let base = std::env::var("CONDUCTOR_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    for tool in ["tar", "zstd"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("bench: `{tool}` not found (apt-get install {tool}); cannot compare");
            std::process::exit(1);
        }
    }
    let work = tempfile::Builder::new()
        .prefix("conductor-bench-")
        .tempdir_in(&base)
        .unwrap();
    let tree = work.path().join("tree");
    let files = ((10_000.0 * scale) as usize).max(20);
    let total = (GIB * scale) as u64;
    let t = Instant::now();
    let sizes = generate(&tree, files, total, 1);
    let bytes: u64 = sizes.iter().sum();
    println!(
        "tree: {} files, {:.1} MiB, {} dirs (generated in {:.1?})",
        files,
        bytes as f64 / 1048576.0,
        dirs_for(files),
        t.elapsed()
    );

    // --- first snapshot vs tar | zstd -------------------------------------------------
    let tarball = work.path().join("tree.tar.zst");
    // Every timed phase starts with no dirty pages pending, so none pays for another's writeback.
    sh("sync");
    let tar_time = time(|| {
        sh(&format!(
            "tar -C {} -cf - . | zstd -q -3 -o {}",
            q(&tree),
            q(&tarball)
        ))
    });
    let tar_sync = time(|| sh(&format!("sync {}", q(&tarball))));
    let tar_size = fs::metadata(&tarball).unwrap().len();

    let store =
        SnapshotStore::open_with(work.path().join("store"), SnapshotStoreOptions::default())
            .unwrap();
    let ws = WorkspaceId::new("bench").unwrap();
    let mut first = None;
    sh("sync");
    let snap_time = time(|| {
        first = Some(
            store
                .create_snapshot(&ws, &tree, "first", &SnapshotOptions::default())
                .unwrap(),
        );
    });
    let first = first.unwrap();
    let cas = store.cas_stats().unwrap();
    println!();
    println!(
        "first snapshot        {:>9.3} s   ({} blobs, {:.1} MiB stored, durable before commit)",
        secs(snap_time),
        cas.blobs,
        cas.bytes as f64 / 1048576.0
    );
    println!(
        "  walk {:.3} s, read + hash + copy {:.3} s, syncfs + publish + manifest {:.3} s",
        secs(first.timings.scan),
        secs(first.timings.read),
        secs(first.timings.commit)
    );
    println!(
        "tar -cf - | zstd -3   {:>9.3} s   ({:.1} MiB tarball, not synced; +{:.3} s to fsync it)",
        secs(tar_time),
        tar_size as f64 / 1048576.0,
        secs(tar_sync)
    );
    println!(
        "  ratio snapshot / tar+zstd            {:.2}x  (target <= 1.0x)",
        secs(snap_time) / secs(tar_time)
    );
    println!(
        "  ratio snapshot / (tar+zstd + fsync)  {:.2}x",
        secs(snap_time) / secs(tar_time + tar_sync)
    );

    // --- incremental snapshot after changing one file ---------------------------------
    // Past the first snapshot's timestamp tick, so its cache entries are trusted.
    std::thread::sleep(Duration::from_millis(50));
    let mut incremental = Vec::new();
    let mut last = first.manifest.id;
    for round in 0..7u64 {
        let victim = tree.join(rel_path(files, (round as usize * 997) % files));
        let mut content = fs::read(&victim).unwrap();
        let at = content.len() / 2;
        content[at] ^= 0x5a;
        fs::write(&victim, &content).unwrap();
        // A file changed within the snapshot's own timestamp tick is (correctly) read again by
        // the next snapshot too; an edit is rarely that close to the snapshot request.
        std::thread::sleep(Duration::from_millis(20));
        let mut snap = None;
        let elapsed = time(|| {
            snap = Some(
                store
                    .create_snapshot(
                        &ws,
                        &tree,
                        &format!("inc-{round}"),
                        &SnapshotOptions::default(),
                    )
                    .unwrap(),
            );
        });
        let snap = snap.unwrap();
        assert_eq!(snap.stats.files_read, 1, "one changed file is read");
        assert_eq!(snap.stats.blobs_added, 1);
        incremental.push((elapsed, snap.timings));
        last = snap.manifest.id;
    }
    incremental.sort_by_key(|(elapsed, _)| *elapsed);
    let (median, timings) = incremental[incremental.len() / 2];
    println!();
    println!(
        "incremental snapshot  {:>9.1} ms median, {:.1} ms min, {:.1} ms max over {} runs (1 file changed 20 ms earlier; target <= 50 ms)",
        ms(median),
        ms(incremental[0].0),
        ms(incremental[incremental.len() - 1].0),
        incremental.len()
    );
    println!(
        "  median run: walk + cache load {:.1} ms, read 1 file {:.1} ms, fsync blob + manifest {:.1} ms, cache save {:.1} ms",
        ms(timings.scan),
        ms(timings.read),
        ms(timings.commit),
        ms(timings.total.saturating_sub(timings.scan + timings.read + timings.commit))
    );

    // --- restore vs zstd -d | tar -x ----------------------------------------------------
    let untar = work.path().join("untar");
    fs::create_dir(&untar).unwrap();
    sh("sync");
    let untar_time = time(|| {
        sh(&format!(
            "zstd -q -d -c {} | tar -C {} -xf -",
            q(&tarball),
            q(&untar)
        ))
    });
    let restored = work.path().join("restored");
    sh("sync");
    let restore_time = time(|| {
        store.restore(first.manifest.id, &restored).unwrap();
    });
    sh("sync");
    let verify_time = time(|| store.verify_snapshot(first.manifest.id).unwrap());
    sh("sync");
    let in_place = {
        // Restoring over the changed tree (rewrites every file, removes nothing).
        time(|| {
            store.restore(last, &tree).unwrap();
        })
    };
    println!();
    println!(
        "restore (new dir)     {:>9.3} s   (every blob hash-verified)",
        secs(restore_time)
    );
    println!("zstd -d | tar -x      {:>9.3} s", secs(untar_time));
    println!(
        "  ratio restore / untar                {:.2}x  (target <= 1.0x)",
        secs(restore_time) / secs(untar_time)
    );
    println!(
        "restore in place      {:>9.3} s   (over the live tree)",
        secs(in_place)
    );
    println!(
        "verify (read + hash)  {:>9.3} s   (all blobs of one snapshot)",
        secs(verify_time)
    );
    fs::remove_dir_all(&untar).unwrap();
    fs::remove_dir_all(&restored).unwrap();
    fs::remove_file(&tarball).unwrap();

    // --- space: 10 snapshots of a slowly changing tree vs 10 tarballs ---------------------
    let space_store =
        SnapshotStore::open_with(work.path().join("space"), SnapshotStoreOptions::default())
            .unwrap();
    let mut tarballs = 0u64;
    let churn = (files / 100).max(1); // 1% of the files change between versions
    for version in 0..10u64 {
        if version > 0 {
            for k in 0..churn {
                let index = (version as usize * 7919 + k * 104_729) % files;
                let path = tree.join(rel_path(files, index));
                let len = fs::metadata(&path).unwrap().len() as usize;
                fs::write(&path, content(version * 1_000_003 + k as u64, len)).unwrap();
            }
        }
        space_store
            .create_snapshot(
                &ws,
                &tree,
                &format!("v{version}"),
                &SnapshotOptions::default(),
            )
            .unwrap();
        let ball = work.path().join(format!("v{version}.tar.zst"));
        sh(&format!(
            "tar -C {} -cf - . | zstd -q -3 -o {}",
            q(&tree),
            q(&ball)
        ));
        tarballs += fs::metadata(&ball).unwrap().len();
        fs::remove_file(&ball).unwrap();
    }
    let cas = space_store.cas_stats().unwrap();
    let manifests = dir_bytes(&work.path().join("space/snapshots"));
    let stored = cas.bytes + manifests;
    println!();
    println!(
        "space, 10 versions with {churn} files ({}%) changed between each:",
        1
    );
    println!("  10 snapshots (CAS, uncompressed blobs + manifests)  {:>8.1} MiB  ({} blobs, {:.1} MiB manifests)", stored as f64 / 1048576.0, cas.blobs, manifests as f64 / 1048576.0);
    println!(
        "  10 tar.zst tarballs                                 {:>8.1} MiB",
        tarballs as f64 / 1048576.0
    );
    println!(
        "  ratio snapshots / tarballs                          {:.2}x",
        stored as f64 / tarballs as f64
    );
    println!(
        "  one tree: {:.1} MiB raw; one tarball ~{:.1} MiB",
        bytes as f64 / 1048576.0,
        tarballs as f64 / 10.0 / 1048576.0
    );
}

fn q(path: &Path) -> String {
    format!("'{}'", path.display())
}

fn sh(script: &str) {
    let status = Command::new("sh").arg("-c").arg(script).status().unwrap();
    assert!(status.success(), "`{script}` failed: {status}");
}

fn time(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn dirs_for(files: usize) -> usize {
    (files / 100).max(1)
}

/// `dNN/eN/file-NNNNN.ext`: 100 files per leaf directory, leaf directories 5 per parent.
fn rel_path(files: usize, index: usize) -> PathBuf {
    let leaf = index % dirs_for(files);
    let ext = ["rs", "txt", "json", "bin", "py"][index % 5];
    PathBuf::from(format!(
        "d{:02}/e{}/file-{index:05}.{ext}",
        leaf / 5,
        leaf % 5
    ))
}

/// Writes the tree; returns the file sizes. Sizes are log-uniform in [1 KiB, 1 MiB], scaled
/// so they add up to `total`.
fn generate(root: &Path, files: usize, total: u64, seed: u64) -> Vec<u64> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let raw: Vec<f64> = (0..files)
        .map(|_| (10.0 + rng.unit() * 10.0).exp2())
        .collect();
    let sum: f64 = raw.iter().sum();
    let sizes: Vec<u64> = raw
        .iter()
        .map(|s| (s / sum * total as f64) as u64)
        .collect();
    for (index, size) in sizes.iter().enumerate() {
        let path = root.join(rel_path(files, index));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(
            &path,
            content(index as u64 + seed * 1_000_000_007, *size as usize),
        )
        .unwrap();
    }
    sizes
}

/// Half random bytes, half text-like (compresses roughly like a source tree with some
/// binaries), in alternating 16 KiB blocks.
fn content(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "fn ", "let ", "match ", "impl ", "self", "=> ", "{\n", "}\n", "return ", "Ok(()) ",
        "    ", "Result<", "String", "// ", "pub ", "use ",
    ];
    let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    let mut out = Vec::with_capacity(len);
    let mut block = 0;
    while out.len() < len {
        let end = (out.len() + 16 * 1024).min(len);
        if block % 2 == 0 {
            while out.len() < end {
                out.extend_from_slice(&rng.next().to_le_bytes());
            }
        } else {
            while out.len() < end {
                out.extend_from_slice(WORDS[(rng.next() % 16) as usize].as_bytes());
            }
        }
        out.truncate(end);
        block += 1;
    }
    out
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}
