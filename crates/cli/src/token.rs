//! `conductor token create|list|revoke`: API tokens (admin only).

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use conductor_types::{CreatedToken, TokenInfo};
use reqwest::Method;
use serde_json::json;

use crate::client::{emit, Client, ClientArgs};

/// `conductor token …`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TokenCommand {
    /// Create a token; its secret is printed once.
    Create {
        /// What it is for.
        name: String,
        /// May manage tokens.
        #[arg(long)]
        admin: bool,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id.
    Revoke {
        /// The token's id (tok_…).
        id: String,
    },
}

/// Runs `conductor token …`.
pub fn main(args: TokenArgs) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|rt| rt.block_on(token(args)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => crate::fail(&error),
    }
}

async fn token(args: TokenArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    match args.command {
        TokenCommand::Create { name, admin } => {
            let body = json!({ "name": name, "admin": admin });
            let created: CreatedToken = client
                .json(client.request(Method::POST, "/api/v1/tokens").json(&body))
                .await?;
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&created)?))?;
            } else {
                eprintln!(
                    "created token {} ({}); it is shown only now:",
                    created.info.id, created.info.name
                );
                emit(&format!("{}\n", created.token))?;
            }
        }
        TokenCommand::List => {
            let tokens: Vec<TokenInfo> = client
                .json(client.request(Method::GET, "/api/v1/tokens"))
                .await?;
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&tokens)?))?;
            } else {
                let mut out = format!(
                    "{:<16}  {:<5}  {:<24}  {:<24}  NAME\n",
                    "ID", "ADMIN", "CREATED", "REVOKED"
                );
                for token in tokens {
                    let revoked = token
                        .revoked_at
                        .map(|at| at.to_string())
                        .unwrap_or_else(|| "-".into());
                    let _ = writeln!(
                        out,
                        "{:<16}  {:<5}  {:<24}  {:<24}  {}",
                        token.id, token.admin, token.created_at, revoked, token.name
                    );
                }
                emit(&out)?;
            }
        }
        TokenCommand::Revoke { id } => {
            let path = format!("/api/v1/tokens/{id}");
            client.send(client.request(Method::DELETE, &path)).await?;
            if !json {
                emit(&format!("revoked {id}\n"))?;
            }
        }
    }
    Ok(())
}
