//! `conductor config show|export|import`, and loading the configuration `conductor serve` runs
//! with: `--config` (else `$CONDUCTOR_CONFIG`, else `$CONDUCTOR_HOME/config.toml`), then
//! `CONDUCTOR_*` variables, then flags.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use conductor_server::config::{resolve, Layers, CONFIG_FILE};
use conductor_server::{Config, RawConfig};

use crate::client::{conductor_home, emit};

/// Where the configuration comes from (shared by `serve` and `config`).
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigSource {
    /// Data directory (default: $CONDUCTOR_HOME, else ~/.conductor).
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// Config file (default: $CONDUCTOR_CONFIG, else <home>/config.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl ConfigSource {
    fn home(&self) -> anyhow::Result<PathBuf> {
        match &self.home {
            Some(home) => Ok(home.clone()),
            None => conductor_home(),
        }
    }

    /// The config file and whether it was named explicitly.
    fn file(&self, home: &Path) -> (PathBuf, bool) {
        if let Some(path) = &self.config {
            return (path.clone(), true);
        }
        match std::env::var_os("CONDUCTOR_CONFIG").filter(|p| !p.is_empty()) {
            Some(path) => (PathBuf::from(path), true),
            None => (home.join(CONFIG_FILE), false),
        }
    }

    /// Resolves file, environment and `flags` into the configuration.
    pub fn load(&self, flags: RawConfig) -> anyhow::Result<Config> {
        let home = self.home()?;
        let (path, explicit) = self.file(&home);
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => Some((path.clone(), RawConfig::from_toml(&path, &text)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let vars: BTreeMap<String, String> = std::env::vars().collect();
        let env = RawConfig::from_env(&vars, |p| std::fs::read_to_string(p))?;
        Ok(resolve(&home, &path, Layers { file, env, flags })?)
    }
}

/// `conductor config …`.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    source: ConfigSource,
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ConfigCommand {
    /// Print the resolved configuration with where each value came from (secrets masked).
    Show,
    /// Print the resolved configuration as a complete config file.
    Export {
        /// Include secret values instead of masking them.
        #[arg(long)]
        include_secrets: bool,
    },
    /// Check a config file (default: standard input) and install it as the config file.
    Import {
        /// The file to import ("-" or nothing for standard input).
        file: Option<PathBuf>,
    },
}

/// Runs `conductor config …`.
pub fn main(args: ConfigArgs) -> ExitCode {
    match config(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => crate::fail(&error),
    }
}

fn config(args: ConfigArgs) -> anyhow::Result<()> {
    match args.command {
        ConfigCommand::Show => {
            let config = args.source.load(RawConfig::default())?;
            emit(&format!("# home: {}\n", config.home.display()))?;
            emit(&format!("# file: {}\n", config.file.display()))?;
            emit(&config.show())
        }
        ConfigCommand::Export { include_secrets } => {
            let config = args.source.load(RawConfig::default())?;
            emit(&config.to_toml(include_secrets))
        }
        ConfigCommand::Import { file } => {
            let (name, text) = match file.filter(|f| f.as_os_str() != "-") {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    (path, text)
                }
                None => (
                    PathBuf::from("<stdin>"),
                    std::io::read_to_string(std::io::stdin()).context("reading standard input")?,
                ),
            };
            let raw = RawConfig::from_toml(&name, &text)?;
            if raw.admin_token.as_deref() == Some("********") {
                bail!("{} has a masked admin_token: export with --include-secrets, or remove the line", name.display());
            }
            let home = args.source.home()?;
            let (target, _) = args.source.file(&home);
            // Validate the whole result before touching the installed file.
            resolve(
                &home,
                &target,
                Layers {
                    file: Some((name.clone(), raw)),
                    ..Layers::default()
                },
            )?;
            if let Some(parent) = target.parent() {
                // The home, when this makes it: private, as `serve` makes it.
                let mut builder = std::fs::DirBuilder::new();
                builder.recursive(true);
                std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                builder
                    .create(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            let temporary = target.with_extension("toml.new");
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut out = options
                .open(&temporary)
                .with_context(|| format!("writing {}", temporary.display()))?;
            out.write_all(text.as_bytes())?;
            out.sync_all()?;
            std::fs::rename(&temporary, &target)
                .with_context(|| format!("installing {}", target.display()))?;
            eprintln!("imported {} into {}", name.display(), target.display());
            Ok(())
        }
    }
}
