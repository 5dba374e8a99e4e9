//! Where a user's resident executor listens, and the checks that make that place theirs.
//!
//! The directory is `$CONDUCTOR_RESIDENT_DIR`, else `$XDG_RUNTIME_DIR/conductor-resident`,
//! else `/run/conductor/resident` for root (`/run/conductor` itself is shared with the container
//! executors and open for reading) and `<temp>/conductor-resident-<uid>` for anyone else. It
//! must be a real directory (not a symlink) owned by the user with no access for group or
//! others; it is created so when missing (its parent too, for root). In it, per build: `exec-<build>.sock` (the socket) and `exec-<build>.lock`
//! (held by the one resident of that build), `exec-<build>.log` (its stderr).

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The build id in file names: enough of it to tell builds apart, short enough for a socket
/// path (at most 107 bytes).
fn build() -> &'static str {
    let id = env!("CONDUCTOR_BUILD_ID");
    id.get(..16).unwrap_or(id)
}

/// A user's resident executor's directory, checked.
#[derive(Debug, Clone)]
pub struct Place {
    dir: PathBuf,
}

impl Place {
    /// This process's user's place, created when missing.
    pub fn for_this_user() -> io::Result<Self> {
        let uid = nix::unistd::Uid::effective().as_raw();
        let dir = match (
            std::env::var_os("CONDUCTOR_RESIDENT_DIR"),
            std::env::var_os("XDG_RUNTIME_DIR"),
        ) {
            (Some(dir), _) => PathBuf::from(dir),
            (None, Some(runtime)) if !runtime.is_empty() => {
                Path::new(&runtime).join("conductor-resident")
            }
            (None, _) if uid == 0 => {
                let parent = Path::new("/run/conductor");
                std::fs::create_dir_all(parent).map_err(|e| annotate(parent, e))?;
                parent.join("resident")
            }
            (None, _) => std::env::temp_dir().join(format!("conductor-resident-{uid}")),
        };
        Self::at(dir, uid)
    }

    /// `dir` as the place of user `uid`: created (mode 0700) when missing, refused unless it is
    /// a directory of `uid`'s that nobody else may enter.
    pub fn at(dir: PathBuf, uid: u32) -> io::Result<Self> {
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(annotate(&dir, e)),
        }
        let meta = std::fs::symlink_metadata(&dir).map_err(|e| annotate(&dir, e))?;
        let refused = if !meta.file_type().is_dir() {
            Some("is not a directory")
        } else if meta.uid() != uid {
            Some("belongs to another user")
        } else if meta.mode() & 0o077 != 0 {
            Some("is open to other users (want mode 0700)")
        } else {
            None
        };
        match refused {
            Some(reason) => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} {reason}", dir.display()),
            )),
            None => Ok(Self { dir }),
        }
    }

    /// The socket of this build's resident.
    pub fn socket(&self) -> PathBuf {
        self.dir.join(format!("exec-{}.sock", build()))
    }

    /// Where this build's resident writes its log (its stderr).
    pub fn log(&self) -> PathBuf {
        self.dir.join(format!("exec-{}.log", build()))
    }

    /// The lock file this build's resident holds while it runs.
    pub fn lock(&self) -> PathBuf {
        self.dir.join(format!("exec-{}.lock", build()))
    }
}

fn annotate(dir: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", dir.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn uid() -> u32 {
        nix::unistd::Uid::effective().as_raw()
    }

    #[test]
    fn a_missing_directory_is_made_private() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("resident");
        let place = Place::at(dir.clone(), uid()).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(place.socket().starts_with(&dir));
        assert!(place.socket().as_os_str().len() < 108);
        assert_ne!(place.socket(), place.lock());
    }

    #[test]
    fn an_open_foreign_or_linked_directory_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        let open = temp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        let error = Place::at(open.clone(), uid()).unwrap_err().to_string();
        assert!(error.contains("open to other users"), "{error}");

        let error = Place::at(temp.path().to_owned(), uid() + 1)
            .unwrap_err()
            .to_string();
        assert!(error.contains("belongs to another user"), "{error}");

        let private = temp.path().join("private");
        Place::at(private.clone(), uid()).unwrap();
        let link = temp.path().join("link");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        let error = Place::at(link, uid()).unwrap_err().to_string();
        assert!(error.contains("is not a directory"), "{error}");
    }
}
