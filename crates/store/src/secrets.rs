//! Task secrets at rest: sealed with XChaCha20-Poly1305 under a key the database never holds.
//!
//! A task's secrets are one JSON object; a non-empty one is stored as [`SEALED_PREFIX`] + hex of
//! a random 24-byte nonce and the ciphertext, with the task id as associated data (a sealed value
//! copied to another task's row does not open). Stores before this one kept the JSON itself
//! (`{…}`); [`SqliteStore::open`](crate::SqliteStore::open) seals those in place.
//!
//! The key comes from a [`KeySource`]: [`KeyFile`] keeps it in a 0600 file beside the database
//! (`secrets.key`), created on first start. A key from elsewhere (an OS keyring, a KMS that
//! unwraps a data key) is another [`KeySource`]. A key that is missing while sealed secrets
//! exist, or that does not open them, is an error at start, never a new key over old data.

use std::fmt;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

/// What a sealed value starts with (a plaintext one is a JSON object, `{`).
pub const SEALED_PREFIX: &str = "sealed:v1:";
/// The key file's name beside the database.
pub const KEY_FILE: &str = "secrets.key";

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;

/// Why secrets could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The key could not be read or written.
    #[error("{action} the secrets key {path}: {source}")]
    KeyIo {
        /// What was being done.
        action: &'static str,
        /// The key's location.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The key is not 64 hex digits.
    #[error("the secrets key {path} is not 64 hex digits: restore the key file this database was sealed with")]
    KeyMalformed {
        /// The key's location.
        path: String,
    },
    /// Sealed secrets exist but the key does not.
    #[error("the secrets key {path} is missing but {count} task(s) in the database have sealed secrets: restore the key file (a new key would make them unreadable)")]
    KeyMissing {
        /// Where the key was looked for.
        path: String,
        /// How many tasks have sealed secrets.
        count: i64,
    },
    /// The key does not open a sealed value.
    #[error("the secrets of task {task} do not open with the key {path}: it is not the key they were sealed with; restore the right key file")]
    WrongKey {
        /// The key's location.
        path: String,
        /// The task whose secrets did not open.
        task: String,
    },
    /// A stored value is neither JSON nor a sealed value.
    #[error("the secrets of task {task} are not a sealed value")]
    Malformed {
        /// The task.
        task: String,
    },
    /// The cipher refused (a message too long for it).
    #[error("sealing the secrets of task {task} failed")]
    Seal {
        /// The task.
        task: String,
    },
}

/// Where the key comes from: the seam for a keyring or KMS.
pub trait KeySource: Send + Sync + fmt::Debug {
    /// The key, or `None` when none exists yet.
    fn load(&self) -> Result<Option<SecretKey>, SecretsError>;
    /// Makes, stores and returns a new key (only when none exists).
    fn create(&self) -> Result<SecretKey, SecretsError>;
    /// Where the key lives, for messages.
    fn location(&self) -> String;
}

/// A 256-bit key. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct SecretKey([u8; KEY_BYTES]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// A new random key.
    pub fn random() -> Self {
        let mut key = [0u8; KEY_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self(key)
    }

    /// The key as 64 hex digits; `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text.trim()).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// The key in a file of its own (mode 0600), as 64 hex digits.
#[derive(Debug, Clone)]
pub struct KeyFile {
    path: PathBuf,
}

impl KeyFile {
    /// The key at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// The key file beside the database at `database` ([`KEY_FILE`] in its directory).
    pub fn beside(database: &Path) -> Self {
        Self::new(database.with_file_name(KEY_FILE))
    }

    fn error(&self, action: &'static str) -> impl FnOnce(io::Error) -> SecretsError + '_ {
        move |source| SecretsError::KeyIo {
            action,
            path: self.location(),
            source,
        }
    }
}

impl KeySource for KeyFile {
    fn load(&self) -> Result<Option<SecretKey>, SecretsError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error("reading")(e)),
        };
        // A key file another user can read is tightened, not refused.
        let mode = std::fs::metadata(&self.path)
            .map_err(self.error("reading"))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600))
                .map_err(self.error("restricting"))?;
        }
        SecretKey::from_hex(&text)
            .map(Some)
            .ok_or_else(|| SecretsError::KeyMalformed {
                path: self.location(),
            })
    }

    fn create(&self) -> Result<SecretKey, SecretsError> {
        let key = SecretKey::random();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(self.error("creating"))?;
        file.write_all(format!("{}\n", key.to_hex()).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(self.error("writing"))?;
        Ok(key)
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

/// Seals and opens secrets with one key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    location: String,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("key", &self.location)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer with `key`, which lives at `location` (for messages).
    pub fn new(key: &SecretKey, location: String) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&key.0.into()),
            location,
        }
    }

    /// `plaintext` (a task's secrets as JSON) sealed for `task`.
    pub fn seal(&self, task: &str, plaintext: &str) -> Result<String, SecretsError> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: task.as_bytes(),
        };
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .map_err(|_| SecretsError::Seal {
                task: task.to_owned(),
            })?;
        Ok(format!(
            "{SEALED_PREFIX}{}{}",
            hex::encode(nonce),
            hex::encode(sealed)
        ))
    }

    /// The JSON of `stored` for `task`: opened when sealed, as is when it is plaintext from an
    /// older store.
    pub fn open(&self, task: &str, stored: &str) -> Result<String, SecretsError> {
        if stored.starts_with('{') {
            return Ok(stored.to_owned());
        }
        let malformed = || SecretsError::Malformed {
            task: task.to_owned(),
        };
        let bytes = stored
            .strip_prefix(SEALED_PREFIX)
            .and_then(|hex_text| hex::decode(hex_text).ok())
            .filter(|bytes| bytes.len() > NONCE_BYTES)
            .ok_or_else(malformed)?;
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let payload = Payload {
            msg: sealed,
            aad: task.as_bytes(),
        };
        let plaintext = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| SecretsError::WrongKey {
                path: self.location.clone(),
                task: task.to_owned(),
            })?;
        String::from_utf8(plaintext).map_err(|_| malformed())
    }
}

/// Whether `stored` is a plaintext value from an older store that holds something (`{}` holds
/// nothing and stays as it is).
pub fn is_plaintext(stored: &str) -> bool {
    stored.starts_with('{') && stored != "{}"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::new(&SecretKey::random(), "test".into())
    }

    #[test]
    fn a_sealed_value_opens_for_its_task_only_and_hides_the_plaintext() {
        let sealer = sealer();
        let json = r#"{"TOKEN":"hunter2-value"}"#;
        let sealed = sealer.seal("task-1", json).unwrap();
        assert!(sealed.starts_with(SEALED_PREFIX));
        assert!(!sealed.contains("hunter2"));
        // A random nonce per value.
        assert_ne!(sealer.seal("task-1", json).unwrap(), sealed);
        assert_eq!(sealer.open("task-1", &sealed).unwrap(), json);
        assert!(matches!(
            sealer.open("task-2", &sealed),
            Err(SecretsError::WrongKey { task, .. }) if task == "task-2"
        ));
        assert!(matches!(
            self::sealer().open("task-1", &sealed),
            Err(SecretsError::WrongKey { .. })
        ));
        // Plaintext from an older store is read as it is.
        assert_eq!(sealer.open("task-1", json).unwrap(), json);
        for bad in ["sealed:v1:zz", "sealed:v1:00", "garbage"] {
            assert!(
                matches!(sealer.open("t", bad), Err(SecretsError::Malformed { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let source = KeyFile::beside(&dir.path().join("conductor.db"));
        assert!(source.load().unwrap().is_none());
        let key = source.create().unwrap();
        let path = dir.path().join(KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(source.load().unwrap().unwrap().0, key.0);
        // Never over an existing key.
        assert!(matches!(
            source.create(),
            Err(SecretsError::KeyIo {
                action: "creating",
                ..
            })
        ));
        // A readable key is tightened; a malformed one refused.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        source.load().unwrap().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "not a key\n").unwrap();
        assert!(matches!(
            source.load(),
            Err(SecretsError::KeyMalformed { .. })
        ));
        assert_eq!(format!("{key:?}"), "SecretKey(..)");
    }
}
