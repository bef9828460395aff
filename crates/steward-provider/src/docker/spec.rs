//! The container a workspace gets, built from an allow-list.
//!
//! From the workspace it takes only the image, the command (as `Cmd`: never through a shell),
//! the environment and the secrets. Everything about the host — network mode, resource
//! limits — comes from the operator's [`DockerConfig`]; the rest is fixed here: not
//! privileged, no binds, mounts, volumes-from, devices or added capabilities, the engine's
//! default PID/IPC/UTS/user namespaces (never the host's), `init` to reap zombies, and no
//! restart policy (Steward restarts instances, not the engine). Nothing a caller sends can
//! reach the host configuration, because nothing of the spec is copied into it.

use super::{labels, DockerConfig};
use crate::{InstanceSpec, ProviderError};
use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use secrecy::ExposeSecret;
use std::collections::HashMap;

/// The image a spec asks for: required, not blank.
pub(super) fn image(spec: &InstanceSpec) -> Result<&str, ProviderError> {
    match spec.image.as_deref().map(str::trim) {
        Some(image) if !image.is_empty() => Ok(image),
        _ => Err(ProviderError::InvalidSpec("image is required".to_owned())),
    }
}

/// Rejects what the engine or the kernel cannot represent, before anything reaches the
/// engine: the engine's own error would quote the offending `K=V` entry, value included.
/// Messages name keys, never values.
pub(super) fn check(spec: &InstanceSpec) -> Result<(), ProviderError> {
    if let Some(command) = &spec.command {
        if let Some(i) = command.iter().position(|arg| arg.contains('\0')) {
            return Err(ProviderError::InvalidSpec(format!(
                "command element {i} contains a NUL byte"
            )));
        }
    }
    spec.check_env()
}

/// The create request for `spec`. It holds secret values: it is never logged or formatted,
/// and dropped as soon as it is sent.
pub(super) fn container(
    config: &DockerConfig,
    spec: &InstanceSpec,
    image: &str,
) -> ContainerCreateBody {
    let env: Vec<String> = spec
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .chain(
            spec.secrets
                .iter()
                .map(|(k, v)| format!("{k}={}", v.expose_secret())),
        )
        .collect();
    let cmd = spec.command.clone().filter(|command| !command.is_empty());
    let labels: HashMap<String, String> = [
        (labels::OWNER, config.owner.clone()),
        (labels::WORKSPACE, spec.workspace_id.to_string()),
        (labels::GENERATION, spec.generation.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd,
        env: Some(env),
        labels: Some(labels),
        stop_timeout: Some(i64::from(config.stop_timeout_secs())),
        host_config: Some(host_config(config)),
        ..ContainerCreateBody::default()
    }
}

/// The host side of the container: the operator's choices and fixed restrictions only.
fn host_config(config: &DockerConfig) -> HostConfig {
    HostConfig {
        network_mode: Some(config.network_mode.clone()),
        memory: config.memory_bytes,
        nano_cpus: config.nano_cpus,
        pids_limit: config.pids_limit,
        privileged: Some(false),
        init: Some(true),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        // Explicitly none, rather than left out, so that the intent reads here.
        binds: None,
        mounts: None,
        volumes_from: None,
        devices: None,
        cap_add: None,
        pid_mode: None,
        ipc_mode: None,
        userns_mode: None,
        ..HostConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;
    use std::collections::BTreeMap;
    use steward_domain::{Generation, WorkspaceId};

    fn spec() -> InstanceSpec {
        InstanceSpec {
            workspace_id: WorkspaceId::from(uuid::Uuid::nil()),
            generation: Generation(7),
            image: Some("agent:1".to_owned()),
            command: Some(vec!["/agent".to_owned(), "--serve".to_owned()]),
            env: BTreeMap::from([("FOO".to_owned(), "bar".to_owned())]),
            secrets: BTreeMap::from([(
                "TOKEN".to_owned(),
                SecretString::from("s3cret".to_owned()),
            )]),
        }
    }

    #[test]
    fn the_container_takes_only_image_command_env_and_labels_from_the_spec() {
        let config = DockerConfig {
            memory_bytes: Some(1 << 28),
            pids_limit: Some(128),
            ..DockerConfig::default()
        };
        let body = container(&config, &spec(), "agent:1");
        assert_eq!(body.image.as_deref(), Some("agent:1"));
        assert_eq!(
            body.cmd,
            Some(vec!["/agent".to_owned(), "--serve".to_owned()])
        );
        assert_eq!(body.entrypoint, None, "the image's entrypoint stays");
        assert_eq!(
            body.env,
            Some(vec!["FOO=bar".to_owned(), "TOKEN=s3cret".to_owned()])
        );
        let labels = body.labels.expect("labels");
        assert_eq!(labels[labels::OWNER], "steward");
        assert_eq!(labels[labels::WORKSPACE], uuid::Uuid::nil().to_string());
        assert_eq!(labels[labels::GENERATION], "7");
        assert_eq!(body.stop_timeout, Some(10));

        let host = body.host_config.expect("host config");
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.init, Some(true));
        assert_eq!(host.memory, Some(1 << 28));
        assert_eq!(host.pids_limit, Some(128));
        assert_eq!(host.nano_cpus, None);
        assert_eq!(
            host.restart_policy.and_then(|p| p.name),
            Some(RestartPolicyNameEnum::NO)
        );
        assert!(host.binds.is_none() && host.mounts.is_none() && host.devices.is_none());
        assert!(host.cap_add.is_none() && host.pid_mode.is_none() && host.ipc_mode.is_none());
    }

    #[test]
    fn an_empty_command_leaves_the_images_own() {
        let mut spec = spec();
        spec.command = Some(Vec::new());
        assert_eq!(
            container(&DockerConfig::default(), &spec, "agent:1").cmd,
            None
        );
    }

    #[test]
    fn bad_specs_are_refused_without_quoting_values() {
        let mut no_image = spec();
        no_image.image = Some("  ".to_owned());
        assert!(
            matches!(image(&no_image), Err(ProviderError::InvalidSpec(m)) if m == "image is required")
        );

        let mut bad_key = spec();
        bad_key.env.insert("A=B".to_owned(), "x".to_owned());
        assert!(matches!(
            check(&bad_key),
            Err(ProviderError::InvalidSpec(_))
        ));

        let mut nul_secret = spec();
        nul_secret.secrets.insert(
            "KEY".to_owned(),
            SecretString::from("canary\0value".to_owned()),
        );
        let Err(ProviderError::InvalidSpec(message)) = check(&nul_secret) else {
            panic!("a NUL byte in a secret is refused");
        };
        assert!(!message.contains("canary"), "{message}");
        assert!(check(&spec()).is_ok());
    }
}
