//! Bearer-token authentication. Tokens are `cdt_` + 64 hex digits of randomness; only their
//! SHA-256 is stored. The admin token is created on first start into `$CONDUCTOR_HOME/admin.token`
//! (mode 0600), where the CLI finds it.

use std::io::Write;
use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use conductor_core::{Store, StoreError};
use conductor_types::{CreatedToken, Timestamp, TokenInfo};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::{AppError, AppState};

/// Prefix of every token, so leaked tokens are easy to search for.
pub const TOKEN_PREFIX: &str = "cdt_";
/// The admin token's file name under `$CONDUCTOR_HOME`.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Hex SHA-256 of a token: what the store keeps.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Creates and stores a new token; the returned secret is not kept anywhere.
pub async fn create_token(
    store: &dyn Store,
    name: &str,
    admin: bool,
) -> Result<CreatedToken, StoreError> {
    let token = format!("{TOKEN_PREFIX}{}", random_hex(32));
    register_token(store, name, admin, token).await
}

/// Stores a token whose secret the caller chose (a configured admin token).
pub async fn register_token(
    store: &dyn Store,
    name: &str,
    admin: bool,
    token: String,
) -> Result<CreatedToken, StoreError> {
    let info = TokenInfo {
        id: format!("tok_{}", random_hex(6)),
        name: name.to_owned(),
        admin,
        created_at: Timestamp::now(),
        revoked_at: None,
    };
    store.create_token(&info, &hash_token(&token)).await?;
    Ok(CreatedToken { info, token })
}

/// Why the admin token could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    /// Reading or writing the file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The configured admin token was revoked.
    #[error("the configured admin_token was revoked: configure another one")]
    Revoked,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Makes sure `home/admin.token` holds a valid, stored admin token: creates it (0600) on first
/// start, re-registers the file's token when the database was replaced, and uses `fixed` (a
/// configured admin token) instead of a random one when given. Returns the file's path.
pub async fn ensure_admin_token(
    store: &dyn Store,
    home: &Path,
    fixed: Option<&str>,
) -> Result<PathBuf, AdminTokenError> {
    let path = home.join(ADMIN_TOKEN_FILE);
    let io = |action, source| AdminTokenError::Io {
        action,
        path: path.clone(),
        source,
    };
    let on_file = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("reading", e)),
    };
    let wanted = fixed.map(str::to_owned).or(on_file.clone());
    if let Some(token) = &wanted {
        match store.token_by_hash(&hash_token(token)).await? {
            Some(info) if info.revoked_at.is_none() && info.admin => {}
            Some(_) if fixed.is_some() => {
                return Err(AdminTokenError::Revoked);
            }
            Some(_) => {}
            None => {
                register_token(store, "admin", true, token.clone()).await?;
            }
        }
    }
    let valid = match &wanted {
        Some(token) => store
            .token_by_hash(&hash_token(token))
            .await?
            .is_some_and(|info| info.revoked_at.is_none() && info.admin),
        None => false,
    };
    let token = match (valid, wanted) {
        (true, Some(token)) => token,
        // The file's token was revoked or lost its admin flag: make a new one.
        _ => create_token(store, "admin", true).await?.token,
    };
    if on_file.as_deref() == Some(token.as_str()) {
        return Ok(path);
    }
    if on_file.is_some() {
        std::fs::remove_file(&path).map_err(|e| io("removing", e))?;
    }
    write_secret(&path, &token).map_err(|(action, source)| io(action, source))?;
    tracing::info!(path = %path.display(), "wrote the admin token");
    Ok(path)
}

/// Where agent `id`'s token is kept: `$CONDUCTOR_HOME/agents/<id>.token` (0600).
pub fn slot_token_path(home: &Path, id: &str) -> PathBuf {
    home.join("agents").join(format!("{id}.token"))
}

/// Gives each slot (`agent-1` … `agent-N`) a token of its own: not an admin, stored hashed like
/// any other, its secret in [`slot_token_path`] for whatever runs on the slot's behalf. A
/// token that is still valid is kept across restarts; a revoked or lost one is replaced.
/// Returns the token ids by slot id.
pub async fn ensure_slot_tokens(
    store: &dyn Store,
    home: &Path,
    slots: usize,
) -> Result<std::collections::BTreeMap<String, String>, AdminTokenError> {
    let dir = home.join("agents");
    let io = |action, path: &Path, source| AdminTokenError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).map_err(|e| io("creating", &dir, e))?;
    let mut ids = std::collections::BTreeMap::new();
    for n in 1..=slots.max(1) {
        let id = format!("agent-{n}");
        let path = slot_token_path(home, &id);
        let kept = match std::fs::read_to_string(&path) {
            Ok(text) => store
                .token_by_hash(&hash_token(text.trim()))
                .await?
                .filter(|info| info.revoked_at.is_none() && !info.admin),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io("reading", &path, e)),
        };
        let token_id = match kept {
            Some(info) => info.id,
            None => {
                let created = create_token(store, &format!("agent {id}"), false).await?;
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io("removing", &path, e)),
                }
                write_secret(&path, &created.token)
                    .map_err(|(action, source)| io(action, &path, source))?;
                created.info.id
            }
        };
        ids.insert(id, token_id);
    }
    Ok(ids)
}

/// Writes a new 0600 file holding `token`, durably.
fn write_secret(path: &Path, token: &str) -> Result<(), (&'static str, std::io::Error)> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| ("creating", e))?;
    writeln!(file, "{token}").map_err(|e| ("writing", e))?;
    file.sync_all().map_err(|e| ("syncing", e))
}

/// The token that authenticated a request (in the request's extensions).
#[derive(Debug, Clone)]
pub struct Caller(pub TokenInfo);

impl Caller {
    /// Refuses callers without the admin flag.
    pub fn require_admin(&self) -> Result<(), AppError> {
        if self.0.admin {
            Ok(())
        } else {
            Err(AppError::Forbidden("this needs an admin token".to_owned()))
        }
    }
}

/// Middleware: a valid, unrevoked bearer token or 401.
pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, AppError> {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            AppError::Unauthorized(
                "missing Authorization header: send Authorization: Bearer <token>".to_owned(),
            )
        })?;
    let token = header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            AppError::Unauthorized("the Authorization header is not Bearer <token>".to_owned())
        })?;
    let info = state
        .store()
        .token_by_hash(&hash_token(token))
        .await?
        .filter(|info| info.revoked_at.is_none())
        .ok_or_else(|| AppError::Unauthorized("invalid or revoked token".to_owned()))?;
    request.extensions_mut().insert(Caller(info));
    Ok(next.run(request).await)
}
