//! A Dockerfile subset translated into an environment ([`translate`]): environments are built
//! offline from Debian bookworm with no registry and no build context, so a Dockerfile is read
//! as a recipe for a base, packages and setup steps rather than run. Pure: no I/O here.
//!
//! The subset:
//!
//! - `FROM debian:bookworm` (`debian:12`, `debian:bookworm-slim`, `debian:12-slim`, with or
//!   without `docker.io/library/`) is the shared base the presets use. `FROM python:3`,
//!   `python:3.11` (`-slim`, `-bookworm`, `-slim-bookworm`) is that base plus Debian's Python
//!   3.11 (`python3`, `python3-pip`, `python3-venv`, `python-is-python3`, and an
//!   `/etc/pip.conf` allowing `pip install` outside a venv as in the python image);
//!   `FROM node:18` (`-slim`, `-bookworm`, `-bookworm-slim`) adds Debian's Node.js 18
//!   (`nodejs`, `npm`). These are made offline. Any other image (another release or version,
//!   a digest, `ubuntu:22.04`) becomes the spec's `base.image`: taken from docker or podman, or
//!   pulled, which needs a reachable registry (a note says so; without one the build fails
//!   naming the ways out). `FROM` flags and a second `FROM` (multi-stage builds) are refused.
//!   `ARG`s before `FROM` are substituted in it.
//! - `RUN` in shell form or JSON exec form. While nothing but apt has run, the
//!   `apt-get|apt update` / `install [-y] [-q] [--no-install-recommends] PKG…` parts of an `&&`
//!   chain become the spec's packages (always installed without recommends, as the builder
//!   does), `apt-get clean` and `rm -rf /var/lib/apt/lists/*` are dropped (the builder cleans
//!   up); from the first other command on, everything is a setup step, in order and verbatim.
//!   `RUN` flags (`--mount`, …) and heredocs are refused.
//! - `ENV` and `ARG NAME=default` are exported to the later `RUN` steps only: an environment
//!   has no variables of its own, so tasks do not see them (a note says so; give them in the
//!   task's `env`). `WORKDIR` makes later `RUN` steps `mkdir -p` and `cd` into it.
//! - `USER root` is accepted; another `USER` is accepted only when no `RUN` follows it (tasks
//!   run as the executor decides). `CMD`, `ENTRYPOINT`, `EXPOSE`, `VOLUME`, `STOPSIGNAL`,
//!   `HEALTHCHECK`, `ONBUILD` and `MAINTAINER` are ignored with a note (a task gives its own
//!   command); `LABEL` and `SHELL ["/bin/sh", "-c"]` are ignored silently, except that a
//!   `description` label becomes the description; another `SHELL` is refused. Comments, blank
//!   lines, `\` continuations and the `escape` directive are handled; other parser directives
//!   (`syntax`, `check`) are ignored.
//! - `COPY` and `ADD` (there is no build context) and anything else are refused naming the line.
//!
//! The environment's content hash is the translated spec's: two Dockerfiles that translate
//! alike (equal, or differing in comments, layout or ignored instructions) name the same build.

mod lex;

use std::collections::BTreeMap;

use lex::{
    and_chain, check_name, double_quote, heredoc, instructions, pairs, shell_quote, substitute,
    unquote, Instruction,
};

use crate::spec::{validate_package, Base};

/// What a Dockerfile translates into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// The base system.
    pub base: Base,
    /// Debian packages (in the order met, without duplicates).
    pub packages: Vec<String>,
    /// Setup steps, in order.
    pub setup: Vec<String>,
    /// From a `description` label, if any.
    pub description: Option<String>,
    /// What was ignored or differs from Docker, one line each, for the user to read.
    pub notes: Vec<String>,
}

/// Why a Dockerfile cannot be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerfileError {
    /// An instruction or form outside the subset.
    #[error("Dockerfile line {line}: {what} is not supported yet: {hint}")]
    Unsupported {
        /// The line the instruction starts on.
        line: usize,
        /// What was found.
        what: String,
        /// What to do instead.
        hint: String,
    },
    /// Text that does not parse.
    #[error("Dockerfile line {line}: {reason}")]
    Syntax {
        /// The line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// No `FROM`.
    #[error("Dockerfile has no FROM instruction (start with FROM debian:bookworm)")]
    NoFrom,
}

/// The `FROM` images the translation knows, for messages.
pub const SUPPORTED_FROM: &str = "debian:bookworm (debian:12, debian:bookworm-slim), python:3 or python:3.11 (Debian's Python 3.11), node:18 (Debian's Node.js 18)";

/// Translates Dockerfile `text` into a base, packages and setup steps (see the module docs for
/// the subset).
pub fn translate(text: &str) -> Result<Translation, DockerfileError> {
    let instructions = instructions(text)?;
    let mut t = Translator::default();
    for instruction in &instructions {
        t.instruction(instruction)?;
    }
    let base = t.base.ok_or(DockerfileError::NoFrom)?;
    if let Some((line, user)) = t.user {
        t.notes.push(format!(
            "line {line}: USER {user} is ignored: tasks run as the executor decides"
        ));
    }
    Ok(Translation {
        base,
        packages: t.packages,
        setup: t.setup,
        description: t.description,
        notes: t.notes,
    })
}

#[derive(Debug, Default)]
struct Translator {
    base: Option<Base>,
    /// `ARG`s declared before `FROM`, for substitution in it.
    global_args: BTreeMap<String, String>,
    packages: Vec<String>,
    setup: Vec<String>,
    /// Something other than apt has run: later apt installs stay setup steps.
    not_hoisting: bool,
    /// An `apt-get update` was dropped while taking packages.
    dropped_update: bool,
    /// `export …` lines for later `RUN` steps.
    exports: Vec<String>,
    workdir: Option<String>,
    /// A non-root `USER` with no `RUN` after it yet.
    user: Option<(usize, String)>,
    description: Option<String>,
    notes: Vec<String>,
}

impl Translator {
    fn instruction(&mut self, i: &Instruction) -> Result<(), DockerfileError> {
        let line = i.line;
        let unsupported = |what: &str, hint: &str| DockerfileError::Unsupported {
            line,
            what: what.to_owned(),
            hint: hint.to_owned(),
        };
        if self.base.is_none() && !matches!(i.keyword.as_str(), "FROM" | "ARG") {
            return Err(DockerfileError::Syntax {
                line,
                reason: format!(
                    "{} before FROM (start with FROM debian:bookworm)",
                    i.keyword
                ),
            });
        }
        match i.keyword.as_str() {
            "FROM" => self.from(i),
            "ARG" => self.arg(i),
            "RUN" => self.run(i),
            "ENV" => self.env(i),
            "WORKDIR" => {
                if i.args.is_empty() {
                    return Err(DockerfileError::Syntax {
                        line,
                        reason: "WORKDIR needs a directory".into(),
                    });
                }
                let dir = unquote(&i.args);
                self.workdir = Some(match &self.workdir {
                    Some(previous) if !dir.starts_with('/') && !dir.starts_with('$') => {
                        format!("{}/{dir}", previous.trim_end_matches('/'))
                    }
                    _ => dir,
                });
                Ok(())
            }
            "USER" => {
                let user = unquote(&i.args);
                let root = matches!(user.as_str(), "root" | "0" | "root:root" | "0:0");
                self.user = (!root).then_some((line, user));
                Ok(())
            }
            "LABEL" => {
                for (key, value) in pairs(line, &i.args)? {
                    if matches!(
                        key.as_str(),
                        "description" | "org.opencontainers.image.description"
                    ) {
                        self.description = Some(unquote(value.strip_prefix('=').unwrap_or(&value)));
                    }
                }
                Ok(())
            }
            "CMD" | "ENTRYPOINT" | "EXPOSE" | "VOLUME" | "STOPSIGNAL" | "HEALTHCHECK"
            | "ONBUILD" | "MAINTAINER" => {
                self.notes.push(format!(
                    "line {line}: {} is ignored: a task gives its own command, ports and volumes",
                    i.keyword
                ));
                Ok(())
            }
            "SHELL" => {
                let shell: Option<Vec<String>> = serde_json::from_str(&i.args).ok();
                match shell.as_deref() {
                    Some([sh, c]) if sh == "/bin/sh" && c == "-c" => Ok(()),
                    _ => Err(unsupported(
                        &format!("SHELL {}", i.args),
                        "RUN steps run with /bin/sh -c; call another shell inside RUN",
                    )),
                }
            }
            "COPY" | "ADD" => Err(unsupported(
                &i.keyword,
                "there is no build context; fetch files in a RUN step or put them in the task's workspace",
            )),
            other => Err(unsupported(
                other,
                "use FROM, RUN, ENV, ARG, WORKDIR (see the Dockerfile subset in the README)",
            )),
        }
    }

    fn from(&mut self, i: &Instruction) -> Result<(), DockerfileError> {
        let line = i.line;
        if self.base.is_some() {
            return Err(DockerfileError::Unsupported {
                line,
                what: "a second FROM (multi-stage build)".into(),
                hint: "use one stage".into(),
            });
        }
        if i.args.starts_with("--") {
            return Err(DockerfileError::Unsupported {
                line,
                what: format!("FROM {}", i.args),
                hint: "FROM takes no flags here".into(),
            });
        }
        let words: Vec<&str> = i.args.split_whitespace().collect();
        let image = match words.as_slice() {
            [image] | [image, _, _] if words.len() == 1 || words[1].eq_ignore_ascii_case("as") => {
                substitute(image, &self.global_args)
            }
            _ => {
                return Err(DockerfileError::Syntax {
                    line,
                    reason: format!("FROM {}: expected IMAGE [AS NAME]", i.args),
                })
            }
        };
        let Some((packages, setup)) = offline_base(&image) else {
            self.notes.push(format!(
                "line {line}: FROM {image} is pulled from a registry unless docker or podman has it (offline, use one of: {SUPPORTED_FROM})"
            ));
            self.base = Some(Base {
                image: Some(image),
                ..Base::default()
            });
            return Ok(());
        };
        if let Some(runtime) = match packages.first() {
            Some(&"python3") => Some("Debian bookworm's Python 3.11 with pip and venv"),
            Some(&"nodejs") => Some("Debian bookworm's Node.js 18 with npm"),
            _ => None,
        } {
            self.notes
                .push(format!("line {line}: FROM {image} is {runtime}"));
        }
        self.base = Some(Base::default());
        self.packages
            .extend(packages.iter().map(|p| (*p).to_owned()));
        self.setup.extend(setup.iter().map(|s| (*s).to_owned()));
        Ok(())
    }

    fn arg(&mut self, i: &Instruction) -> Result<(), DockerfileError> {
        for (key, value) in pairs(i.line, &i.args)? {
            let Some(value) = value.strip_prefix('=') else {
                if self.base.is_some() {
                    self.notes.push(format!(
                        "line {}: ARG {key} has no default and there are no build arguments: it is unset",
                        i.line
                    ));
                }
                continue;
            };
            if self.base.is_none() {
                self.global_args.insert(key, unquote(value));
            } else {
                self.exports.push(format!("export {key}={value}"));
            }
        }
        Ok(())
    }

    fn env(&mut self, i: &Instruction) -> Result<(), DockerfileError> {
        let line = i.line;
        let first = i.args.split_whitespace().next().unwrap_or("");
        let assignments: Vec<(String, String)> = if first.contains('=') {
            let pairs = pairs(line, &i.args)?;
            if let Some((key, _)) = pairs.iter().find(|(_, v)| !v.starts_with('=')) {
                return Err(DockerfileError::Syntax {
                    line,
                    reason: format!("ENV {key}: expected NAME=VALUE"),
                });
            }
            pairs
                .into_iter()
                .map(|(k, v)| (k, v[1..].to_owned()))
                .collect()
        } else {
            // Legacy `ENV NAME VALUE…`: the value is the rest of the line.
            let (key, value) =
                i.args
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| DockerfileError::Syntax {
                        line,
                        reason: format!("ENV {}: expected NAME=VALUE or NAME VALUE", i.args),
                    })?;
            check_name(line, key)?;
            vec![(key.to_owned(), double_quote(value.trim()))]
        };
        for (key, value) in assignments {
            self.notes.push(format!(
                "line {line}: ENV {key} applies to the later RUN steps only; tasks do not see it (set it in the task's env)"
            ));
            self.exports.push(format!("export {key}={value}"));
        }
        Ok(())
    }

    fn run(&mut self, i: &Instruction) -> Result<(), DockerfileError> {
        let line = i.line;
        if i.args.starts_with("--") {
            return Err(DockerfileError::Unsupported {
                line,
                what: format!(
                    "RUN {}",
                    i.args.split_whitespace().next().unwrap_or_default()
                ),
                hint: "RUN flags need BuildKit; give the plain command".into(),
            });
        }
        let script = if i.args.starts_with('[') {
            let argv: Vec<String> =
                serde_json::from_str(&i.args).map_err(|e| DockerfileError::Syntax {
                    line,
                    reason: format!("RUN exec form is not a JSON array of strings: {e}"),
                })?;
            match argv.as_slice() {
                [] => {
                    return Err(DockerfileError::Syntax {
                        line,
                        reason: "RUN [] runs nothing".into(),
                    })
                }
                [sh, c, script] if (sh == "sh" || sh == "/bin/sh") && c == "-c" => script.clone(),
                _ => argv
                    .iter()
                    .map(|a| shell_quote(a))
                    .collect::<Vec<_>>()
                    .join(" "),
            }
        } else {
            if heredoc(&i.args) {
                return Err(DockerfileError::Unsupported {
                    line,
                    what: "a RUN heredoc".into(),
                    hint: "use RUN lines with && and \\ continuations".into(),
                });
            }
            i.args.clone()
        };
        if script.trim().is_empty() {
            return Err(DockerfileError::Syntax {
                line,
                reason: "RUN needs a command".into(),
            });
        }
        if let Some((user_line, user)) = &self.user {
            return Err(DockerfileError::Unsupported {
                line,
                what: format!("RUN as USER {user} (line {user_line})"),
                hint: "setup steps run as root; run commands as the user with su or runuser inside RUN".into(),
            });
        }
        let rest = if self.not_hoisting {
            Some(script)
        } else {
            self.hoist(line, &script)
        };
        if let Some(rest) = rest {
            self.not_hoisting = true;
            let mut prefix: Vec<String> = self.exports.clone();
            if let Some(dir) = &self.workdir {
                let dir = double_quote(dir);
                prefix.push(format!("mkdir -p {dir}"));
                prefix.push(format!("cd {dir}"));
            }
            prefix.push(rest.trim().to_owned());
            self.setup.push(prefix.join(" && "));
        }
        Ok(())
    }

    /// Takes the leading apt parts of `script`'s `&&` chain as packages; returns what is left
    /// to run as a setup step, if anything.
    fn hoist(&mut self, line: usize, script: &str) -> Option<String> {
        for (start, segment) in and_chain(script) {
            match apt(segment) {
                Apt::Update => self.dropped_update = true,
                Apt::Housekeeping => {}
                Apt::Install {
                    packages,
                    no_recommends,
                } => {
                    if !no_recommends {
                        self.notes.push(format!(
                            "line {line}: packages are installed without recommended packages (as with --no-install-recommends)"
                        ));
                    }
                    for package in packages {
                        if !self.packages.contains(&package) {
                            self.packages.push(package);
                        }
                    }
                }
                Apt::Other => {
                    let rest = script[start..].trim();
                    // The builder runs `apt-get update` only when there are packages.
                    return Some(if self.packages.is_empty() && self.dropped_update {
                        format!("apt-get update && {rest}")
                    } else {
                        rest.to_owned()
                    });
                }
            }
        }
        None
    }
}

/// The images made offline from the Debian bookworm base: the packages and setup steps each
/// adds to it; `None` for any other image (an image base).
fn offline_base(image: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    const PYTHON: [&str; 4] = [
        "python3",
        "python3-pip",
        "python3-venv",
        "python-is-python3",
    ];
    const PIP_CONF: [&str; 1] =
        ["printf '[global]\\nbreak-system-packages = true\\n' > /etc/pip.conf"];
    const NODE: [&str; 2] = ["nodejs", "npm"];
    if image.contains('@') {
        return None;
    }
    let short = image
        .strip_prefix("docker.io/")
        .or_else(|| image.strip_prefix("index.docker.io/"))
        .unwrap_or(image);
    let short = short.strip_prefix("library/").unwrap_or(short);
    let (repository, tag) = short.split_once(':').unwrap_or((short, "latest"));
    let tag_in = |allowed: &[&str]| allowed.contains(&tag);
    match repository {
        "debian" if tag_in(&["bookworm", "12", "bookworm-slim", "12-slim"]) => Some((&[], &[])),
        "python" => {
            let version = tag
                .strip_suffix("-slim-bookworm")
                .or_else(|| tag.strip_suffix("-bookworm"))
                .or_else(|| tag.strip_suffix("-slim"))
                .unwrap_or(tag);
            (version == "3" || version == "3.11").then_some((&PYTHON[..], &PIP_CONF[..]))
        }
        "node" => {
            let version = tag
                .strip_suffix("-bookworm-slim")
                .or_else(|| tag.strip_suffix("-bookworm"))
                .or_else(|| tag.strip_suffix("-slim"))
                .unwrap_or(tag);
            (version == "18").then_some((&NODE[..], &[][..]))
        }
        _ => None,
    }
}

/// What one command of an `&&` chain is, as far as packages go.
#[derive(Debug, PartialEq, Eq)]
enum Apt {
    Update,
    Install {
        packages: Vec<String>,
        no_recommends: bool,
    },
    /// `apt-get clean`, `rm -rf /var/lib/apt/lists/*`: the builder cleans up itself.
    Housekeeping,
    Other,
}

/// Classifies one simple command; anything with quotes, variables, redirections or other
/// shell syntax is [`Apt::Other`].
fn apt(segment: &str) -> Apt {
    let plain = |w: &str| {
        w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+.~:=/_-".contains(c))
    };
    let mut words: Vec<&str> = segment
        .split([' ', '\t'])
        .filter(|w| !w.is_empty())
        .collect();
    if words == ["rm", "-rf", "/var/lib/apt/lists/*"] {
        return Apt::Housekeeping;
    }
    if words.iter().any(|w| !plain(w)) {
        return Apt::Other;
    }
    // Leading assignments such as DEBIAN_FRONTEND=noninteractive.
    while words
        .first()
        .is_some_and(|w| w.contains('=') && !w.starts_with('-'))
    {
        words.remove(0);
    }
    let Some((command, args)) = words.split_first() else {
        return Apt::Other;
    };
    if !matches!(
        *command,
        "apt-get" | "apt" | "/usr/bin/apt-get" | "/usr/bin/apt"
    ) {
        return Apt::Other;
    }
    let mut no_recommends = false;
    let mut positional = Vec::new();
    for arg in args {
        match *arg {
            "--no-install-recommends" => no_recommends = true,
            "--yes" | "--assume-yes" | "--quiet" | "--no-install-suggests" => {}
            flag if flag.starts_with('-')
                && flag.len() > 1
                && flag[1..].chars().all(|c| c == 'y' || c == 'q') => {}
            flag if flag.starts_with('-') => return Apt::Other,
            word => positional.push(word),
        }
    }
    match positional.split_first() {
        Some((&"update", [])) => Apt::Update,
        Some((&"clean", [])) => Apt::Housekeeping,
        Some((&"install", packages))
            if !packages.is_empty() && packages.iter().all(|p| validate_package(p).is_ok()) =>
        {
            Apt::Install {
                packages: packages.iter().map(|p| (*p).to_owned()).collect(),
                no_recommends,
            }
        }
        _ => Apt::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Translation {
        translate(text).unwrap()
    }

    fn err(text: &str) -> String {
        translate(text).unwrap_err().to_string()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn apt_installs_become_packages_and_the_rest_setup_steps() {
        let t = ok(r#"
# syntax=docker/dockerfile:1
FROM debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends jq \
        curl \
    && rm -rf /var/lib/apt/lists/*
RUN apt install -y git
RUN echo built > /etc/conductor-dockerfile-test
RUN apt-get update && apt-get install -y make
"#);
        assert_eq!(
            t,
            Translation {
                base: Base::default(),
                packages: strings(&["jq", "curl", "git"]),
                setup: strings(&[
                    "echo built > /etc/conductor-dockerfile-test",
                    "apt-get update && apt-get install -y make",
                ]),
                description: None,
                notes: strings(&[
                    "line 7: packages are installed without recommended packages (as with --no-install-recommends)"
                ]),
            }
        );
    }

    #[test]
    fn a_chain_is_split_where_apt_ends_and_kept_verbatim_after() {
        let t = ok("FROM debian:12\nRUN DEBIAN_FRONTEND=noninteractive apt-get -qq update && apt-get -y install --no-install-recommends python3-pip && pip install --break-system-packages 'httpx>=0.27' && apt-get install -y jq\n");
        assert_eq!(t.packages, ["python3-pip"]);
        assert_eq!(
            t.setup,
            ["pip install --break-system-packages 'httpx>=0.27' && apt-get install -y jq"]
        );
        // Nothing taken: the dropped update is put back, as the builder only updates for packages.
        let t = ok("FROM debian:12\nRUN apt-get update && curl -fsSL https://example.com/x | sh");
        assert_eq!(t.packages, Vec::<String>::new());
        assert_eq!(
            t.setup,
            ["apt-get update && curl -fsSL https://example.com/x | sh"]
        );
        // `&&` inside quotes does not split; variables and flags with values are not taken.
        let t = ok("FROM debian:12\nRUN echo 'a && apt-get install -y x' && true\nRUN apt-get install -y $PKG");
        assert_eq!(
            t.setup,
            [
                "echo 'a && apt-get install -y x' && true",
                "apt-get install -y $PKG"
            ]
        );
        let t = ok("FROM debian:12\nRUN apt-get install -y -t bookworm-backports jq");
        assert_eq!(t.setup, ["apt-get install -y -t bookworm-backports jq"]);
        assert!(t.packages.is_empty());
    }

    #[test]
    fn exec_form_env_arg_and_workdir_reach_later_run_steps() {
        let t = ok(r#"FROM debian:bookworm-slim
ARG VERSION=1.2
ENV PIP_NO_CACHE_DIR=1 GREETING="hello world"
ENV LEGACY some value
WORKDIR /opt
WORKDIR app
RUN ["sh", "-c", "echo $GREETING > greeting"]
RUN ["touch", "a file"]
"#);
        let prefix = r#"export VERSION=1.2 && export PIP_NO_CACHE_DIR=1 && export GREETING="hello world" && export LEGACY="some value" && mkdir -p "/opt/app" && cd "/opt/app""#;
        assert_eq!(
            t.setup,
            [
                format!("{prefix} && echo $GREETING > greeting"),
                format!("{prefix} && touch 'a file'"),
            ]
        );
        assert_eq!(
            t.notes,
            [
                "line 3: ENV PIP_NO_CACHE_DIR applies to the later RUN steps only; tasks do not see it (set it in the task's env)",
                "line 3: ENV GREETING applies to the later RUN steps only; tasks do not see it (set it in the task's env)",
                "line 4: ENV LEGACY applies to the later RUN steps only; tasks do not see it (set it in the task's env)",
            ]
        );
    }

    #[test]
    fn harmless_instructions_are_ignored_with_notes() {
        let t = ok(r#"ARG SUITE=bookworm
FROM docker.io/library/debian:${SUITE} AS base
LABEL maintainer="me" description="my tools"
RUN useradd app
USER app
EXPOSE 8080
CMD ["bash"]
"#);
        assert_eq!(t.description.as_deref(), Some("my tools"));
        assert_eq!(t.setup, ["useradd app"]);
        assert_eq!(
            t.notes,
            [
                "line 6: EXPOSE is ignored: a task gives its own command, ports and volumes",
                "line 7: CMD is ignored: a task gives its own command, ports and volumes",
                "line 5: USER app is ignored: tasks run as the executor decides",
            ]
        );
        assert_eq!(ok("FROM debian:12\nUSER root\nRUN true").setup, ["true"]);
        // The escape directive changes the continuation character.
        let t = ok("# escape=`\nFROM debian:12\nRUN apt-get install -y `\n  jq");
        assert_eq!(t.packages, ["jq"]);
    }

    #[test]
    fn python_and_node_images_are_debian_packages() {
        for image in ["python:3.11", "python:3", "python:3.11-slim-bookworm"] {
            let t = ok(&format!("FROM {image}\nRUN pip install httpx"));
            assert_eq!(
                t.packages,
                [
                    "python3",
                    "python3-pip",
                    "python3-venv",
                    "python-is-python3"
                ],
                "{image}"
            );
            assert_eq!(
                t.setup,
                [
                    "printf '[global]\\nbreak-system-packages = true\\n' > /etc/pip.conf",
                    "pip install httpx"
                ]
            );
        }
        // An implicit step does not stop apt installs from becoming packages.
        let t = ok("FROM python:3.11-slim\nRUN apt-get update && apt-get install -y --no-install-recommends gcc");
        assert_eq!(t.packages.last().map(String::as_str), Some("gcc"));
        let t = ok("FROM node:18-bookworm-slim\nRUN npm install -g eslint");
        assert_eq!(t.packages, ["nodejs", "npm"]);
        assert_eq!(t.setup, ["npm install -g eslint"]);
        assert_eq!(
            t.notes,
            ["line 1: FROM node:18-bookworm-slim is Debian bookworm's Node.js 18 with npm"]
        );
        assert_eq!(
            ok("FROM python:3").notes,
            ["line 1: FROM python:3 is Debian bookworm's Python 3.11 with pip and venv"]
        );
    }

    #[test]
    fn other_bases_are_image_bases_with_a_note() {
        for image in [
            "python:3.12-slim",
            "debian:bullseye",
            "alpine:3.19",
            "debian",
            "node:20",
            "debian@sha256:abc",
            "ubuntu:22.04",
        ] {
            let t = ok(&format!(
                "FROM {image}\nRUN apt-get update && apt-get install -y --no-install-recommends jq"
            ));
            assert_eq!(t.base.image.as_deref(), Some(image));
            assert_eq!(t.packages, ["jq"]);
            assert_eq!(
                t.notes,
                [format!("line 1: FROM {image} is pulled from a registry unless docker or podman has it (offline, use one of: {SUPPORTED_FROM})")]
            );
        }
        assert_eq!(
            ok("ARG V=3.12\nFROM python:${V}").base.image.as_deref(),
            Some("python:3.12")
        );
        assert_eq!(
            err("RUN true"),
            "Dockerfile line 1: RUN before FROM (start with FROM debian:bookworm)"
        );
        assert_eq!(
            err("# just a comment\n"),
            "Dockerfile has no FROM instruction (start with FROM debian:bookworm)"
        );
    }

    #[test]
    fn unsupported_instructions_name_their_line() {
        assert_eq!(
            err("FROM debian:12\n\nCOPY . /app"),
            "Dockerfile line 3: COPY is not supported yet: there is no build context; fetch files in a RUN step or put them in the task's workspace"
        );
        assert!(err("FROM debian:12\nADD x.tar /")
            .starts_with("Dockerfile line 2: ADD is not supported yet"));
        assert_eq!(
            err("FROM debian:12 AS build\nRUN make\nFROM debian:12\n"),
            "Dockerfile line 3: a second FROM (multi-stage build) is not supported yet: use one stage"
        );
        assert_eq!(
            err("FROM debian:12\nRUN --mount=type=cache,target=/root/.cache pip install x"),
            "Dockerfile line 2: RUN --mount=type=cache,target=/root/.cache is not supported yet: RUN flags need BuildKit; give the plain command"
        );
        assert!(err("FROM debian:12\nRUN <<EOF\necho hi\nEOF").contains("a RUN heredoc"));
        assert_eq!(
            err("FROM debian:12\nUSER app\nRUN whoami"),
            "Dockerfile line 3: RUN as USER app (line 2) is not supported yet: setup steps run as root; run commands as the user with su or runuser inside RUN"
        );
        assert!(err("FROM debian:12\nSHELL [\"/bin/bash\", \"-c\"]").contains("SHELL"));
        assert!(err("FROM debian:12\nFROBNICATE x")
            .starts_with("Dockerfile line 2: FROBNICATE is not supported yet"));
        assert_eq!(
            err("FROM debian:12\nRUN [\"sh\", "),
            "Dockerfile line 2: RUN exec form is not a JSON array of strings: EOF while parsing a value at line 1 column 6"
        );
        assert!(err("FROM debian:12\nENV A=\"unterminated").contains("unterminated quote"));
    }

    #[test]
    fn layout_and_comments_do_not_change_the_translation() {
        let a = ok("FROM debian:bookworm\nRUN apt-get update && apt-get install -y --no-install-recommends jq\nRUN echo built > /etc/x\n");
        let b = ok("# a comment\nFROM   debian:bookworm\n\nRUN apt-get update \\\n # inside\n  && apt-get install -y --no-install-recommends \\\n    jq\nrun echo built > /etc/x\nCMD [\"sh\"]\n");
        assert_eq!(
            (&a.base, &a.packages, &a.setup),
            (&b.base, &b.packages, &b.setup)
        );
    }
}
