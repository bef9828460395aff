//! The body of `POST /v1/workspaces`, built field by field: `CreateBody::named("w")
//! .provider("docker").image(IMAGE)`. Fields left unset are not sent, so the daemon's
//! defaults apply.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// A create request. Serializes to the JSON the API takes; [`CreateBody::json`] gives it as a
/// value to alter further (an unknown field, a wrong type) for validation tests.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CreateBody {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    secrets: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ready_when: Option<String>,
}

impl CreateBody {
    /// A workspace with only a name: the daemon's default provider and no configuration.
    pub fn named(name: &str) -> CreateBody {
        CreateBody {
            name: name.to_owned(),
            ..CreateBody::default()
        }
    }

    /// On `provider` (`sim`, `process`, `docker`).
    pub fn provider(mut self, provider: &str) -> CreateBody {
        self.provider = Some(provider.to_owned());
        self
    }

    /// Running `image` (docker).
    pub fn image(mut self, image: &str) -> CreateBody {
        self.image = Some(image.to_owned());
        self
    }

    /// Running `command` (process, docker).
    pub fn command(mut self, command: &[&str]) -> CreateBody {
        self.command = Some(command.iter().map(|s| (*s).to_owned()).collect());
        self
    }

    /// With the environment variable `key=value`.
    pub fn env(mut self, key: &str, value: &str) -> CreateBody {
        self.env.insert(key.to_owned(), value.to_owned());
        self
    }

    /// With the secret `key=value`.
    pub fn secret(mut self, key: &str, value: &str) -> CreateBody {
        self.secrets.insert(key.to_owned(), value.to_owned());
        self
    }

    /// With the model setting `model`.
    pub fn model(mut self, model: &str) -> CreateBody {
        self.model = Some(model.to_owned());
        self
    }

    /// Ready when `rule` holds (`instance` or `agent`) instead of the provider's default.
    pub fn ready_when(mut self, rule: &str) -> CreateBody {
        self.ready_when = Some(rule.to_owned());
        self
    }

    /// As a JSON value.
    pub fn json(&self) -> Value {
        serde_json::to_value(self).expect("a create body is plain JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unset_fields_are_not_sent() {
        assert_eq!(CreateBody::named("w").json(), json!({ "name": "w" }));
        let full = CreateBody::named("w")
            .provider("docker")
            .image("img")
            .command(&["agent", "--port", "0"])
            .env("LOG", "debug")
            .secret("TOKEN", "s1")
            .model("small")
            .ready_when("instance");
        assert_eq!(
            full.json(),
            json!({
                "name": "w", "provider": "docker", "image": "img",
                "command": ["agent", "--port", "0"], "env": { "LOG": "debug" },
                "secrets": { "TOKEN": "s1" }, "model": "small", "ready_when": "instance",
            })
        );
    }
}
