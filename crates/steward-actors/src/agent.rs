//! The agent channel's credentials and the restart-context delivery.
//!
//! Each generation gets a fresh token `<workspace id>.<generation>.<256 random bits>`: the
//! prefix routes an agent call to its workspace's actor without any global index, the random
//! part is the secret. Only its SHA-256 is stored; comparison is constant-time. The plaintext
//! lives in the instance's environment and in the actor's memory (to authenticate the
//! restart-context POST to the agent), nowhere else.

use base64::Engine;
use rand::RngCore;
use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox, SecretString};
use sha2::{Digest, Sha256};
use std::time::Duration;
use steward_domain::{Generation, RestartContext, WorkspaceId};
use subtle::ConstantTimeEq;

/// The random part of a new token for `generation` of `id`, with the hash to store. The
/// token itself is [`token`] of it: 32 bytes are kept, not the 80-character text.
pub(crate) fn issue_token(
    id: WorkspaceId,
    generation: Generation,
) -> (SecretBox<[u8; 32]>, [u8; 32]) {
    let mut secret = SecretBox::new(Box::new([0u8; 32]));
    rand::rngs::OsRng.fill_bytes(secret.expose_secret_mut());
    let hash = hash(token(id, generation, &secret).expose_secret());
    (secret, hash)
}

/// The token of `generation` of `id` with random part `secret`.
pub(crate) fn token(
    id: WorkspaceId,
    generation: Generation,
    secret: &SecretBox<[u8; 32]>,
) -> SecretString {
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret.expose_secret());
    SecretString::from(format!("{id}.{generation}.{secret}"))
}

/// SHA-256 of a token.
pub(crate) fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The workspace and generation a token claims (unverified).
pub fn token_claims(token: &str) -> Option<(WorkspaceId, Generation)> {
    let mut parts = token.splitn(3, '.');
    let id = parts.next()?.parse().ok()?;
    let generation = parts.next()?.parse().ok()?;
    parts.next().filter(|s| !s.is_empty())?;
    Some((id, Generation(generation)))
}

/// Whether `token` hashes to `stored_hash` (constant-time).
pub(crate) fn verify(token: &str, stored_hash: &[u8; 32]) -> bool {
    bool::from(hash(token).ct_eq(stored_hash))
}

/// POSTs `context` to the agent at `url` (authenticated with the agent's own token), retrying
/// until it is accepted or `deadline` passes. Returns whether it was delivered.
pub(crate) async fn deliver_context(
    http: reqwest::Client,
    url: String,
    token: SecretString,
    context: RestartContext,
    deadline: Duration,
) -> bool {
    let body = serde_json::json!({
        "generation": context.generation.0,
        "previous_generation": context.previous_generation.0,
        "causes": context.causes.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
    });
    let endpoint = format!("{}/context", url.trim_end_matches('/'));
    let attempts = async {
        let mut pause = Duration::from_millis(100);
        loop {
            let sent = http
                .post(&endpoint)
                .bearer_auth(token.expose_secret())
                .json(&body)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => {
                    tracing::debug!(status = %response.status(), "restart context refused; retrying")
                }
                Err(e) => tracing::debug!(error = %e, "restart context not delivered; retrying"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    };
    tokio::time::timeout(deadline, attempts).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_workspace_and_generation_and_verifies_only_itself() {
        let id = WorkspaceId::from(uuid::Uuid::new_v4());
        let (secret, stored) = issue_token(id, Generation(7));
        let token = token(id, Generation(7), &secret);
        let token = token.expose_secret();
        assert_eq!(token_claims(token), Some((id, Generation(7))));
        assert!(verify(token, &stored));
        let (other, _) = issue_token(id, Generation(7));
        assert!(
            !verify(
                super::token(id, Generation(7), &other).expose_secret(),
                &stored
            ),
            "same claims, other secret"
        );
        assert!(token.len() > 43 + 36, "at least 256 random bits");
        assert_eq!(token_claims("garbage"), None);
        assert_eq!(token_claims(&format!("{id}.7.")), None);
    }
}
