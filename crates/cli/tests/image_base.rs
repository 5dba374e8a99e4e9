//! Environments built from a container image (`base.image`) instead of debootstrap: the
//! `minimal` environment's image, already in docker, is the base here (no registry is
//! reachable on the machines this runs on), and an image that is nowhere gives the error that
//! says what to do. Skipped, with the reason, when not root, without docker, or before
//! `conductor env build minimal` has imported the image.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: a failed unwrap is a failed test

use conductor_envs::{Base, BuildConfig, BuildEvent, Builder, EnvError, EnvSpec, EnvStore};

mod support;

/// The `minimal` environment's image tag, when docker has it.
fn minimal_image() -> Option<String> {
    let tag = conductor_envs::preset("minimal")?.image_tag();
    let inspected = std::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", &tag])
        .output()
        .ok()?;
    inspected.status.success().then_some(tag)
}

fn spec(name: &str, image: &str) -> EnvSpec {
    EnvSpec {
        name: name.to_owned(),
        description: String::new(),
        base: Base {
            image: Some(image.to_owned()),
            ..Base::default()
        },
        packages: Vec::new(),
        setup: vec!["echo from-image > /etc/conductor-marker".to_owned()],
        dockerfile: None,
    }
}

#[test]
fn an_image_in_docker_is_a_base_and_a_missing_one_says_what_to_do() {
    if !support::is_root() {
        eprintln!("skipping: building environments needs root");
        return;
    }
    let Some(image) = minimal_image() else {
        eprintln!("skipping: docker does not have the minimal environment's image (conductor env build minimal)");
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let builder = Builder::new(EnvStore::new(home.path()), BuildConfig::default());
    let mut steps = Vec::new();
    let built = builder
        .build(&spec("from-image", &image), &mut |event| {
            if let BuildEvent::Step { title, .. } = event {
                steps.push(title);
            }
        })
        .unwrap();
    assert!(
        steps
            .first()
            .is_some_and(|s| s == &format!("exporting the image {image}")),
        "{steps:?}"
    );
    let rootfs = built.dir.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/conductor-marker")).unwrap(),
        "from-image\n"
    );
    // The image's own system: what minimal installs is there, owned as in the image.
    assert!(rootfs.join("usr/bin/git").is_file());
    assert_eq!(built.manifest.mirror, format!("image {image}"));
    assert!(built
        .manifest
        .packages
        .iter()
        .any(|(name, _)| name == "git"));

    // Unchanged: not built again.
    let mut cached = false;
    builder
        .build(&spec("from-image", &image), &mut |event| {
            cached |= matches!(event, BuildEvent::Cached { .. })
        })
        .unwrap();
    assert!(cached);

    let missing = "nonexistent.invalid/conductor-base-test:1";
    let error = builder
        .build(&spec("from-nowhere", missing), &mut |_| {})
        .unwrap_err();
    assert!(matches!(error, EnvError::BaseImage { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains(missing)
            && message.contains("pulling it failed")
            && message.contains("remove base.image"),
        "{message}"
    );
}
