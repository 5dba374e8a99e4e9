//! The home's directories that hold task and API content — workspaces (and their `agents/`,
//! `named/`, `quota/`, `named-quota/`, `diffs/`), snapshots, output spools — are the server
//! user's alone: mode 0700, made so at every start (an older home is fixed), so no other local
//! user reaches a workspace's files. Sandboxes do not need the way through: the namespace
//! executor's helper (real root) mounts the workspace before it enters the user namespace, and
//! container engines mount it from their daemon (root, or a rootless engine of the server's own
//! user). A rootless engine of another user (a root server with `CONDUCTOR_PODMAN_SOCKET` on a
//! user's Podman) gets search permission only — never read, never through world bits — by a
//! POSIX ACL entry (`user:UID:--x`, [`grant_search`]) on the home and these directories.
//! Spools left by a previous run (killed before it could delete them) are removed here too.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::scheduler::SchedulerConfig;

/// The executors' spool directory under `$CONDUCTOR_HOME` (`<home>/logs/<execution>/…`).
pub const SPOOL_DIR: &str = "logs";

/// Mode of every directory [`private_dirs`] names.
pub const PRIVATE_MODE: u32 = 0o700;

/// The directories made private at start, parents before children.
pub fn private_dirs(home: &Path, config: &SchedulerConfig) -> Vec<PathBuf> {
    let root = &config.workspace_root;
    let mut dirs = vec![root.clone()];
    dirs.extend(
        ["agents", "named", "quota", "named-quota", "diffs"]
            .iter()
            .map(|sub| root.join(sub)),
    );
    dirs.push(config.snapshot_root.clone());
    dirs.push(home.join(SPOOL_DIR));
    dirs
}

/// Creates each of `dirs` (with missing parents) and sets it to [`PRIVATE_MODE`]; a symlink
/// where a directory belongs is refused, and so is a shared directory (sticky bit, like
/// `/tmp`: a `workspace_root` pointed at one must not close it to everyone else).
pub fn make_private(dirs: &[PathBuf]) -> io::Result<()> {
    for dir in dirs {
        std::fs::create_dir_all(dir).map_err(|e| context(e, "creating", dir))?;
        let meta = std::fs::symlink_metadata(dir).map_err(|e| context(e, "reading", dir))?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not a directory (symlinks are not followed)",
                    dir.display()
                ),
            ));
        }
        if meta.permissions().mode() & 0o1000 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is a shared directory (sticky bit): give Conductor a directory of its own",
                    dir.display()
                ),
            ));
        }
        if meta.permissions().mode() & 0o7777 != PRIVATE_MODE {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_MODE))
                .map_err(|e| context(e, "chmod 0700", dir))?;
        }
    }
    Ok(())
}

/// Gives each of `users` search (`x`) permission on each of `dirs` through the directory's
/// POSIX access ACL (`user:UID:--x` and a `--x` mask; owner, group and other stay as the mode
/// says). Replaces the directory's access ACL: call it after the mode is set.
pub fn grant_search(dirs: &[PathBuf], users: &[u32]) -> io::Result<()> {
    if users.is_empty() {
        return Ok(());
    }
    for dir in dirs {
        let mode = std::fs::symlink_metadata(dir)
            .map_err(|e| context(e, "reading", dir))?
            .permissions()
            .mode();
        let acl = search_acl(mode, users);
        rustix::fs::setxattr(
            dir.as_path(),
            "system.posix_acl_access",
            &acl,
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(|e| {
            context(
                e.into(),
                "setting an ACL (does the file system support POSIX ACLs?) on",
                dir,
            )
        })?;
    }
    Ok(())
}

/// The `system.posix_acl_access` value (version 2, entries sorted by tag then id) of a
/// directory of `mode` whose named `users` may search it.
pub fn search_acl(mode: u32, users: &[u32]) -> Vec<u8> {
    const USER_OBJ: u16 = 0x01;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    const NO_ID: u32 = u32::MAX;
    const SEARCH: u16 = 1;
    let bits = |shift: u32| ((mode >> shift) & 0o7) as u16;
    let mut users = users.to_vec();
    users.sort_unstable();
    users.dedup();
    let mut entries = vec![(USER_OBJ, bits(6), NO_ID)];
    entries.extend(users.iter().map(|uid| (USER, SEARCH, *uid)));
    entries.push((GROUP_OBJ, bits(3), NO_ID));
    entries.push((MASK, bits(3) | SEARCH, NO_ID));
    entries.push((OTHER, bits(0), NO_ID));
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    acl
}

/// Removes everything in the spool directory (what a killed run left). Returns how many
/// entries were removed.
pub fn clear_spools(home: &Path) -> io::Result<usize> {
    let dir = home.join(SPOOL_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(context(e, "reading", &dir)),
    };
    let mut removed = 0;
    for entry in entries {
        let path = entry.map_err(|e| context(e, "reading", &dir))?.path();
        let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        let result = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        result.map_err(|e| context(e, "removing", &path))?;
        removed += 1;
    }
    Ok(removed)
}

fn context(error: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn every_root_of_user_content_is_named() {
        let config = SchedulerConfig {
            snapshot_root: PathBuf::from("/h/snapshots"),
            ..SchedulerConfig::new(PathBuf::from("/h/workspaces"))
        };
        let names: Vec<String> = private_dirs(Path::new("/h"), &config)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "/h/workspaces",
                "/h/workspaces/agents",
                "/h/workspaces/named",
                "/h/workspaces/quota",
                "/h/workspaces/named-quota",
                "/h/workspaces/diffs",
                "/h/snapshots",
                "/h/logs",
            ]
        );
    }

    #[test]
    fn existing_open_directories_are_closed_and_symlinks_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let fresh = tmp.path().join("a/b");
        make_private(&[open.clone(), fresh.clone()]).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!((mode(&open), mode(&fresh)), (0o700, 0o700));

        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        let error = make_private(&[link]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);

        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let error = make_private(std::slice::from_ref(&shared)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(mode(&shared), 0o1777);
    }

    #[test]
    fn the_acl_names_each_user_with_search_only() {
        let acl = search_acl(0o700, &[1001, 5, 1001]);
        let entries: Vec<(u16, u16, u32)> = acl[4..]
            .chunks(8)
            .map(|e| {
                (
                    u16::from_le_bytes([e[0], e[1]]),
                    u16::from_le_bytes([e[2], e[3]]),
                    u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
                )
            })
            .collect();
        assert_eq!(&acl[..4], &2u32.to_le_bytes());
        assert_eq!(
            entries,
            [
                (0x01, 7, u32::MAX),
                (0x02, 1, 5),
                (0x02, 1, 1001),
                (0x04, 0, u32::MAX),
                (0x10, 1, u32::MAX),
                (0x20, 0, u32::MAX),
            ]
        );
    }

    #[test]
    fn a_granted_user_can_search_but_not_read_and_others_cannot_search() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: checking access as another user needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("private");
        let inside = dir.join("ws");
        std::fs::create_dir_all(&inside).unwrap();
        make_private(std::slice::from_ref(&dir)).unwrap();
        grant_search(std::slice::from_ref(&dir), &[4242]).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o710);
        // As uid 4242 (and another, 4343), in a child process: stat through, list, stat.
        let probe = |uid: u32| -> (bool, bool) {
            let script = format!(
                "setpriv --reuid={uid} --regid={uid} --clear-groups sh -c 'stat {} >/dev/null 2>&1 && echo search; ls {} >/dev/null 2>&1 && echo read; true'",
                inside.display(),
                dir.display()
            );
            let out = std::process::Command::new("sh")
                .args(["-c", &script])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (text.contains("search"), text.contains("read"))
        };
        assert_eq!(probe(4242), (true, false));
        assert_eq!(probe(4343), (false, false));
    }

    #[test]
    fn spools_left_behind_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(clear_spools(tmp.path()).unwrap(), 0);
        let spool = tmp.path().join(SPOOL_DIR).join("exec-1");
        std::fs::create_dir_all(&spool).unwrap();
        std::fs::write(spool.join("stdout.log"), b"x").unwrap();
        std::fs::write(tmp.path().join(SPOOL_DIR).join("stray"), b"y").unwrap();
        assert_eq!(clear_spools(tmp.path()).unwrap(), 2);
        assert_eq!(
            std::fs::read_dir(tmp.path().join(SPOOL_DIR))
                .unwrap()
                .count(),
            0
        );
    }
}
