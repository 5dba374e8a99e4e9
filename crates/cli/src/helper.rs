//! Which sandbox helper the local executors start: `conductor-sandbox-init` beside this binary
//! when it comes from the same build, else this binary itself (`conductor __sandbox-init`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use conductor_sandbox::HELPER_BINARY;

/// The helper for this process's executors (decided once).
pub fn helper_path() -> PathBuf {
    static CHOSEN: OnceLock<PathBuf> = OnceLock::new();
    CHOSEN
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
            choose(&exe, env!("CONDUCTOR_BUILD_ID"))
        })
        .clone()
}

/// The section of the helper binary that holds its build id (see `bin/sandbox_init.rs`).
pub const BUILD_ID_SECTION: &[u8] = b".conductor_build_id";

/// The helper binary beside `exe` if its build id section holds `build_id`, else `exe`. Read,
/// not run: starting the helper to ask would cost a process start on every `conductor exec`.
fn choose(exe: &Path, build_id: &str) -> PathBuf {
    let sibling = exe.with_file_name(HELPER_BINARY);
    if !sibling.is_file() {
        return exe.to_owned();
    }
    match build_id_of(&sibling) {
        Some(id) if id == build_id.as_bytes() => sibling,
        _ => {
            tracing::info!(
                helper = %sibling.display(),
                "the helper binary is from another build; {} serves as its own helper",
                exe.display()
            );
            exe.to_owned()
        }
    }
}

/// The contents of the ELF section [`BUILD_ID_SECTION`] of the file at `path` (`None`: not an
/// ELF file, or no such section). Reads the headers and that section only.
fn build_id_of(path: &Path) -> Option<Vec<u8>> {
    use object::read::elf::{FileHeader, SectionHeader};
    let file = std::fs::File::open(path).ok()?;
    let data = object::ReadCache::new(file);
    let header = object::elf::FileHeader64::<object::Endianness>::parse(&data).ok()?;
    let endian = header.endian().ok()?;
    let sections = header.sections(endian, &data).ok()?;
    let (_, section) = sections.section_by_name(endian, BUILD_ID_SECTION)?;
    section.data(endian, &data).ok().map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn script(dir: &Path, body: &str) {
        let path = dir.join(HELPER_BINARY);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn the_helper_binary_is_used_only_when_it_is_from_the_same_build() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("conductor");
        // None beside it.
        assert_eq!(choose(&exe, "abc"), exe);
        // Not an ELF file (a script that would answer right if it were run).
        script(dir.path(), "echo abc");
        assert_eq!(choose(&exe, "abc"), exe);
        // An ELF file without the section: this test binary.
        let me = std::env::current_exe().unwrap();
        std::fs::copy(&me, dir.path().join(HELPER_BINARY)).unwrap();
        assert_eq!(choose(&exe, "abc"), exe);
    }

    #[test]
    fn the_built_helper_carries_this_builds_id() {
        // The helper binary cargo built beside this test's deps directory, when it is there.
        let me = std::env::current_exe().unwrap();
        let Some(helper) = me
            .parent()
            .and_then(Path::parent)
            .map(|dir| dir.join(HELPER_BINARY))
            .filter(|path| path.is_file())
        else {
            eprintln!("skipping: no {HELPER_BINARY} built beside {}", me.display());
            return;
        };
        let id = env!("CONDUCTOR_BUILD_ID");
        let answer = std::process::Command::new(&helper)
            .arg("--build-id")
            .output()
            .unwrap();
        if String::from_utf8_lossy(&answer.stdout).trim() != id {
            eprintln!(
                "skipping: {} is from another build (cargo build rebuilds it)",
                helper.display()
            );
            return;
        }
        assert_eq!(build_id_of(&helper).as_deref(), Some(id.as_bytes()));
        let exe = helper.with_file_name("conductor");
        assert_eq!(choose(&exe, id), helper);
        assert_eq!(choose(&exe, "0000000000000000"), exe);
    }
}
