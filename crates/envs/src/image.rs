//! Image bases: the root filesystem of a container image (`base.image` in a spec) as the start
//! of a build, instead of debootstrap. The image is taken from docker or podman when either has
//! it, pulled otherwise (the only step that needs a registry); then a container is created from
//! it (never started), exported, and unpacked as root with owners and modes kept.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::build::{which, Steps};
use crate::command::clean_command;
use crate::EnvError;

/// The engines' command-line tools, in the order they are tried.
const ENGINES: [&str; 2] = ["docker", "podman"];

/// `engine`'s command line tool with a clean environment, still pointed where the caller's is.
fn engine_command(engine: &str) -> Command {
    let mut command = clean_command(engine);
    for name in ["DOCKER_HOST", "CONTAINER_HOST"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
}

/// Unpacks `image`'s root filesystem into `rootfs` (which must not exist); returns the image's
/// id as the engine reports it, for the base's manifest.
pub(crate) fn export(
    image: &str,
    rootfs: &Path,
    steps: &mut Steps<'_>,
) -> Result<String, EnvError> {
    let engines: Vec<&'static str> = ENGINES
        .into_iter()
        .filter(|engine| which(engine).is_some())
        .collect();
    if engines.is_empty() {
        return Err(EnvError::MissingTool {
            program: "docker or podman",
            hint: "an image base is exported with a container engine: apt-get install docker.io or podman (scripts/services installs both)",
        });
    }
    let (engine, id) = match engines
        .iter()
        .find_map(|engine| image_id(engine, image).map(|id| (*engine, id)))
    {
        Some(found) => found,
        None => pull(&engines, image, steps)?,
    };
    std::fs::create_dir_all(rootfs)
        .map_err(|e| EnvError::io(format!("creating {}", rootfs.display()), e))?;
    let container = output(
        &format!("{engine} create"),
        engine_command(engine).args(["create", "--entrypoint", "/bin/true", image]),
    )?;
    let exported = unpack(engine, &container, rootfs);
    // Removed whatever the export did; a failure to remove only leaves a stopped container.
    let _ = engine_command(engine)
        .args(["rm", "-f", &container])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    exported?;
    Ok(id)
}

/// The id of `image` in `engine`, if it has it.
fn image_id(engine: &str, image: &str) -> Option<String> {
    let out = engine_command(engine)
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !id.is_empty()).then_some(id)
}

/// Pulls `image` with the first engine that can.
fn pull(
    engines: &[&'static str],
    image: &str,
    steps: &mut Steps<'_>,
) -> Result<(&'static str, String), EnvError> {
    let mut failures = Vec::new();
    for &engine in engines {
        let mut command = engine_command(engine);
        command.args(["pull", image]);
        match steps.run(&format!("{engine} pull {image}"), command) {
            Ok(()) => {
                if let Some(id) = image_id(engine, image) {
                    return Ok((engine, id));
                }
                failures.push(format!("{engine}: pulled, but the image is not there"));
            }
            Err(EnvError::StepFailed { tail, .. }) => failures.push(format!(
                "{engine}: {}",
                tail.lines().last().unwrap_or("failed").trim()
            )),
            Err(other) => failures.push(format!("{engine}: {other}")),
        }
    }
    Err(EnvError::BaseImage {
        image: image.to_owned(),
        reason: failures.join("; "),
    })
}

/// `engine export container | tar -x` into `rootfs`, both checked.
fn unpack(engine: &str, container: &str, rootfs: &Path) -> Result<(), EnvError> {
    let step = format!("{engine} export {container}");
    let mut export = engine_command(engine)
        .args(["export", container])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| EnvError::io(step.clone(), e))?;
    let stream = export
        .stdout
        .take()
        .ok_or_else(|| EnvError::io(step.clone(), std::io::Error::other("no stdout")))?;
    let untar = clean_command("tar")
        .args(["-x", "-f", "-", "--numeric-owner", "-p", "-C"])
        .arg(rootfs)
        .stdin(Stdio::from(stream))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| EnvError::io("tar -x", e))?;
    let exported = export
        .wait_with_output()
        .map_err(|e| EnvError::io(step.clone(), e))?;
    for (what, status, stderr) in [
        (step.as_str(), exported.status, exported.stderr),
        ("tar -x", untar.status, untar.stderr),
    ] {
        if !status.success() {
            return Err(EnvError::StepFailed {
                step: what.to_owned(),
                status: status.to_string(),
                tail: String::from_utf8_lossy(&stderr).trim().to_owned(),
            });
        }
    }
    Ok(())
}

/// Runs `command` and returns its stdout, trimmed; a failure carries its stderr.
fn output(step: &str, command: &mut Command) -> Result<String, EnvError> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| EnvError::io(step.to_owned(), e))?;
    if !out.status.success() {
        return Err(EnvError::StepFailed {
            step: step.to_owned(),
            status: out.status.to_string(),
            tail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
