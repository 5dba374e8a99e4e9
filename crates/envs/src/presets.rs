//! The preset environments (issue 4 / seed 001), all from Debian packages on the shared base
//! (`minbase` plus python3 and ca-certificates), so presets share one debootstrap.

use crate::spec::{Base, EnvSpec};

/// Names of the presets, in the order `conductor env list` shows them.
pub const PRESET_NAMES: [&str; 8] = [
    "minimal",
    "python-dev",
    "nodejs-dev",
    "fullstack",
    "python-ml",
    "security-tools",
    "claude-code",
    "codex",
];

const PYTHON_DEV: [&str; 6] = [
    "python-is-python3",
    "python3-pip",
    "python3-venv",
    "python3-pytest",
    "black",
    "flake8",
];
const NODE_DEV: [&str; 2] = ["nodejs", "npm"];
const NODE_TOOLS: &str = "npm install --global --no-fund --no-audit jest eslint prettier";
/// What an agent CLI works with besides itself: Debian's Node.js and npm (the CLIs come from the
/// npm registry), python3 (in the base), ripgrep for fast search.
const AGENT_TOOLS: [&str; 3] = ["nodejs", "npm", "ripgrep"];
/// Claude Code, pinned: the version is in the setup line, hence in the environment's hash. The
/// package declares Node >= 22 but ships a native executable per platform (its postinstall copies
/// it over `bin/claude.exe`), so Debian's Node 18 only runs the install script, never the CLI.
const CLAUDE_CODE_SETUP: &str =
    "npm install --global --no-fund --no-audit @anthropic-ai/claude-code@2.1.337";
/// The Codex CLI, pinned (a Node launcher over a native executable from the platform package).
const CODEX_SETUP: &str = "npm install --global --no-fund --no-audit @openai/codex@0.171.0";
const DB_CLIENTS: [&str; 4] = [
    "postgresql-client",
    "redis-tools",
    "mariadb-client",
    "sqlite3",
];

/// The preset called `name`.
pub fn preset(name: &str) -> Option<EnvSpec> {
    let spec = |description: &str, packages: Vec<&str>, setup: Vec<&str>| EnvSpec {
        name: name.to_owned(),
        description: description.to_owned(),
        base: Base::default(),
        packages: ["git", "curl"]
            .into_iter()
            .chain(packages)
            .map(str::to_owned)
            .collect(),
        setup: setup.into_iter().map(str::to_owned).collect(),
        dockerfile: None,
    };
    Some(match name {
        "minimal" => spec("shell, git, curl, python3", vec![], vec![]),
        "python-dev" => spec(
            "python3 with pip, venv, pytest, black, flake8",
            PYTHON_DEV.to_vec(),
            vec![],
        ),
        "nodejs-dev" => spec(
            "node and npm, with jest, eslint and prettier from the npm registry",
            NODE_DEV.to_vec(),
            vec![NODE_TOOLS],
        ),
        "fullstack" => spec(
            "python-dev and nodejs-dev plus PostgreSQL, Redis, MariaDB and SQLite clients",
            [&PYTHON_DEV[..], &NODE_DEV[..], &DB_CLIENTS[..]].concat(),
            vec![NODE_TOOLS],
        ),
        "python-ml" => spec(
            "python3 with numpy, pandas, scikit-learn and jupyter",
            vec![
                "python3-pip",
                "python3-numpy",
                "python3-pandas",
                "python3-sklearn",
                "jupyter",
                "python3-notebook",
                "python3-ipykernel",
            ],
            vec![],
        ),
        "security-tools" => spec(
            "bandit and shellcheck",
            vec!["bandit", "shellcheck"],
            vec![],
        ),
        "claude-code" => spec(
            "Anthropic's Claude Code CLI (pinned, from npm) with node, npm, ripgrep and python3",
            AGENT_TOOLS.to_vec(),
            vec![CLAUDE_CODE_SETUP],
        ),
        "codex" => spec(
            "OpenAI's Codex CLI (pinned, from npm) with node, npm, ripgrep and python3",
            AGENT_TOOLS.to_vec(),
            vec![CODEX_SETUP],
        ),
        _ => return None,
    })
}

/// Every preset.
pub fn presets() -> Vec<EnvSpec> {
    PRESET_NAMES
        .iter()
        .filter_map(|name| preset(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_preset_is_valid_and_presets_share_the_base() {
        let all = presets();
        assert_eq!(all.len(), PRESET_NAMES.len());
        for spec in &all {
            spec.validate().unwrap();
            assert_eq!(spec.base.hash(), Base::default().hash(), "{}", spec.name);
        }
        let hashes: BTreeSet<_> = all.iter().map(EnvSpec::content_hash).collect();
        assert_eq!(hashes.len(), all.len());
        assert_eq!(preset("nope"), None);
    }

    #[test]
    fn presets_hold_what_the_issue_names() {
        let packages = |name: &str| preset(name).unwrap().packages;
        assert_eq!(packages("minimal"), ["git", "curl"]);
        for tool in ["python3-pytest", "black", "flake8", "python3-pip"] {
            assert!(packages("python-dev").contains(&tool.to_owned()), "{tool}");
            assert!(packages("fullstack").contains(&tool.to_owned()), "{tool}");
        }
        assert_eq!(preset("nodejs-dev").unwrap().setup, [NODE_TOOLS]);
        assert!(packages("security-tools").contains(&"bandit".to_owned()));
        assert_eq!(preset("claude-code").unwrap().setup, [CLAUDE_CODE_SETUP]);
        assert_eq!(preset("codex").unwrap().setup, [CODEX_SETUP]);
        for agent in ["claude-code", "codex"] {
            assert_eq!(packages(agent), ["git", "curl", "nodejs", "npm", "ripgrep"]);
        }
    }

    #[test]
    fn the_pinned_cli_version_is_part_of_the_hash() {
        let pinned = preset("claude-code").unwrap();
        let mut bumped = pinned.clone();
        bumped.setup = vec![CLAUDE_CODE_SETUP.replace("2.1.337", "2.1.338")];
        assert_ne!(pinned.content_hash(), bumped.content_hash());
    }
}
