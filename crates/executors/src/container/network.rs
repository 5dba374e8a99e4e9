//! Network `full` for containers: a bridge network Conductor makes, `conductor-full`, whose
//! host interface is `cnd-docker` (or `cnd-podman`), so the namespace executor's rules for every `cnd+` interface
//! hold for it too (see [`crate::namespace::firewall`]): nothing on the host is reachable from it
//! (its gateway, docker0's address, the server's port, loopback), nor link-local metadata, nor
//! the engines' other bridges, nor another container on it (`enable_icc=false` on Docker, and
//! `-i cnd+ -o cnd+ -j DROP` where bridged traffic meets iptables). The engine masquerades its
//! subnet on the way out, as for any bridge network.

use std::collections::HashMap;

use bollard::models::NetworkCreateRequest;
use conductor_core::ExecutorError;

use super::engine::{Engine, EngineKind};
use crate::namespace::firewall::install_filter_rules;

/// The network `full` containers join.
pub const FULL_NETWORK: &str = "conductor-full";

/// The host interface of `engine`'s [`FULL_NETWORK`] (one per engine: two bridges cannot
/// share a name).
pub fn bridge_name(engine: EngineKind) -> &'static str {
    match engine {
        EngineKind::Docker => "cnd-docker",
        EngineKind::Podman => "cnd-podman",
    }
}

/// The create body of [`FULL_NETWORK`].
pub fn full_network_body(engine: EngineKind) -> NetworkCreateRequest {
    let mut options = HashMap::from([(
        "com.docker.network.bridge.name".to_owned(),
        bridge_name(engine).to_owned(),
    )]);
    if engine == EngineKind::Docker {
        options.insert(
            "com.docker.network.bridge.enable_icc".to_owned(),
            "false".to_owned(),
        );
    }
    NetworkCreateRequest {
        name: FULL_NETWORK.to_owned(),
        driver: Some("bridge".to_owned()),
        internal: Some(false),
        labels: Some(HashMap::from([(
            "io.conductor.network".to_owned(),
            "full".to_owned(),
        )])),
        options: Some(options),
        ..NetworkCreateRequest::default()
    }
}

/// Installs the host's rules for `cnd+` interfaces and makes [`FULL_NETWORK`] unless it is
/// there with the right bridge; a network of that name on another bridge is refused (its
/// containers would not be covered by the rules).
pub async fn ensure_full_network(engine: &Engine) -> Result<(), ExecutorError> {
    let setup = |reason: String| ExecutorError::Setup {
        stage: format!("preparing the {FULL_NETWORK} network"),
        reason,
    };
    tokio::task::spawn_blocking(install_filter_rules)
        .await
        .map_err(|e| setup(e.to_string()))?
        .map_err(|e| setup(e.to_string()))?;
    match engine.client().inspect_network(FULL_NETWORK, None).await {
        Ok(network) => {
            let bridge = network
                .options
                .as_ref()
                .and_then(|options| options.get("com.docker.network.bridge.name"))
                .cloned();
            let podman_bridge = bridge_interface(engine, FULL_NETWORK).await;
            let wanted = Some(bridge_name(engine.kind()));
            if bridge.as_deref() == wanted || podman_bridge.as_deref() == wanted {
                return Ok(());
            }
            Err(setup(format!(
                "a network named {FULL_NETWORK} exists on another bridge ({}): remove it \
                 (`{} network rm {FULL_NETWORK}`) and Conductor makes its own",
                bridge
                    .or(podman_bridge)
                    .unwrap_or_else(|| "unknown".to_owned()),
                engine.kind().name()
            )))
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => engine
            .client()
            .create_network(full_network_body(engine.kind()))
            .await
            .map(|_| ())
            .map_err(|e| setup(format!("creating it: {e}"))),
        Err(e) => Err(setup(format!("inspecting it: {e}"))),
    }
}

/// Podman's bridge interface of `network` (its own inspect field), when the engine is Podman.
async fn bridge_interface(engine: &Engine, network: &str) -> Option<String> {
    if engine.kind() != EngineKind::Podman {
        return None;
    }
    let output = tokio::process::Command::new("podman")
        .args([
            "network",
            "inspect",
            "--format",
            "{{.NetworkInterface}}",
            network,
        ])
        .output()
        .await
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_network_is_a_bridge_named_for_the_rules() {
        let docker = full_network_body(EngineKind::Docker);
        assert_eq!(docker.name, "conductor-full");
        assert_eq!(docker.driver.as_deref(), Some("bridge"));
        assert_eq!(
            docker.options,
            Some(HashMap::from([
                (
                    "com.docker.network.bridge.name".to_owned(),
                    "cnd-docker".to_owned()
                ),
                (
                    "com.docker.network.bridge.enable_icc".to_owned(),
                    "false".to_owned()
                ),
            ]))
        );
        let podman = full_network_body(EngineKind::Podman);
        assert_eq!(
            podman.options,
            Some(HashMap::from([(
                "com.docker.network.bridge.name".to_owned(),
                "cnd-podman".to_owned()
            )]))
        );
    }
}
