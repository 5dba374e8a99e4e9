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

/// The helper binary beside `exe` if it answers `--build-id` with `build_id`, else `exe`.
fn choose(exe: &Path, build_id: &str) -> PathBuf {
    let sibling = exe.with_file_name(HELPER_BINARY);
    if !sibling.is_file() {
        return exe.to_owned();
    }
    let answer = std::process::Command::new(&sibling)
        .arg("--build-id")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match answer {
        Ok(out)
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == build_id =>
        {
            sibling
        }
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
        // One from another build, one that fails, one from this build.
        script(dir.path(), "echo def");
        assert_eq!(choose(&exe, "abc"), exe);
        script(dir.path(), "exit 3");
        assert_eq!(choose(&exe, "abc"), exe);
        script(dir.path(), "echo abc");
        assert_eq!(choose(&exe, "abc"), dir.path().join(HELPER_BINARY));
    }
}
