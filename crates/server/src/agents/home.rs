//! Each session's agent home on the host: `<sessions>/<session id>/home`, 0700, mounted as the
//! agent's `HOME` (outside the workspace, so snapshots and diffs never carry transcripts), and the
//! files an adapter asks for written into it. The agent controls what is in its home between
//! turns, so every write is confined beneath it: no symlink it planted is followed.

use std::io::Write;
use std::path::{Path, PathBuf};

use conductor_agents::HomeFile;
use conductor_types::SessionId;
use conductor_workspace::{AtomicWriter, UploadOptions};

/// Makes session `id`'s home (if new) and writes `files` into it; returns its path.
pub(crate) fn prepare_home(
    sessions: &Path,
    id: &SessionId,
    files: &[HomeFile],
) -> Result<PathBuf, String> {
    let session = sessions.join(id.as_str());
    let home = session.join("home");
    crate::hostdirs::make_private(&[session, home.clone()])
        .map_err(|e| format!("making the session's home: {e}"))?;
    let options = UploadOptions {
        mode: 0o600,
        create_parents: true,
        max_bytes: Some(1024 * 1024),
    };
    for file in files {
        let write = || -> Result<(), String> {
            let mut writer = AtomicWriter::create(&home, Path::new(&file.path), &options)
                .map_err(|e| e.to_string())?;
            writer
                .write_all(file.contents.as_bytes())
                .map_err(|e| e.to_string())?;
            writer.commit().map_err(|e| e.to_string())
        };
        write().map_err(|e| format!("writing {} in the agent's home: {e}", file.path))?;
    }
    Ok(home)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_land_beneath_the_home_and_planted_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let id = SessionId::random();
        let file = |path: &str| HomeFile {
            path: path.into(),
            contents: "x = 1\n".into(),
        };
        let home = prepare_home(dir.path(), &id, &[file(".codex/config.toml")]).unwrap();
        assert_eq!(
            std::fs::read_to_string(home.join(".codex/config.toml")).unwrap(),
            "x = 1\n"
        );
        // The agent replaces its config directory with a link out of its home.
        std::fs::remove_dir_all(home.join(".codex")).unwrap();
        std::os::unix::fs::symlink(outside.path(), home.join(".codex")).unwrap();
        assert!(prepare_home(dir.path(), &id, &[file(".codex/config.toml")]).is_err());
        assert!(!outside.path().join("config.toml").exists());
        assert!(prepare_home(dir.path(), &id, &[file("../escape")]).is_err());
    }
}
