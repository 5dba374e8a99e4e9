//! The HTTP client the `task`, `run` and `token` commands share: where the server is, which
//! token to send, and turning `{ "error": { "code", "message" } }` answers into errors.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use conductor_types::ApiErrorBody;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

/// Where the server listens unless told otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8081";

/// Flags every client command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The server's URL.
    #[arg(long, env = "CONDUCTOR_SERVER", default_value = DEFAULT_SERVER, global = true)]
    pub server: String,
    /// Bearer token (default: the admin token in $CONDUCTOR_HOME/admin.token).
    #[arg(long, env = "CONDUCTOR_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `$CONDUCTOR_HOME`, or `~/.conductor`.
pub fn conductor_home() -> anyhow::Result<PathBuf> {
    if let Some(home) = std::env::var_os("CONDUCTOR_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow!("neither CONDUCTOR_HOME nor HOME is set"))?;
    Ok(PathBuf::from(home).join(".conductor"))
}

/// A client of one server with one token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// A client from the flags; reads the admin token file when no token is given.
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let token = match &args.token {
            Some(token) => token.clone(),
            None => {
                let path = conductor_home()?.join("admin.token");
                let text = std::fs::read_to_string(&path).with_context(|| {
                    format!(
                        "reading the admin token {} (pass --token or set CONDUCTOR_TOKEN)",
                        path.display()
                    )
                })?;
                text.trim().to_owned()
            }
        };
        let http = reqwest::Client::builder()
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: args.server.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// A request to `path` (under the server URL) with the token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends; a non-2xx answer becomes an error with the server's code and message.
    pub async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the conductor server at {}", self.base))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        match serde_json::from_str::<ApiErrorBody>(&text) {
            Ok(body) => bail!("{} ({}, {})", body.error.message, body.error.code, status),
            Err(_) if status == StatusCode::NOT_FOUND => bail!("not found ({status})"),
            Err(_) => bail!("the server answered {status}: {}", text.trim()),
        }
    }

    /// Sends and decodes a JSON answer.
    pub async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> anyhow::Result<T> {
        let response = self.send(request).await?;
        response
            .json()
            .await
            .context("decoding the server's answer")
    }
}

/// Writes to stdout; a closed pipe (`conductor task list | head`) is not an error.
pub fn emit(text: &str) -> anyhow::Result<()> {
    emit_bytes(text.as_bytes())
}

/// As [`emit`], for bytes.
pub fn emit_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to standard output"),
    }
}
