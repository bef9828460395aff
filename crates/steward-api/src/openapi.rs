//! The API's description, served at `GET /openapi.json`: generated from the handlers'
//! annotations and the DTOs (`ApiDoc`), then completed by [`describe`] with what holds for
//! every operation of a kind and with the input rules, so that it cannot drift from the
//! behaviour:
//!
//! - an operation with a security requirement may answer 401 (`WWW-Authenticate: Bearer`)
//!   and 503 (`Retry-After`: overload, restarting actor, store, shutdown);
//! - a path `id` is a UUID, else 400 `INVALID_ID`; a path `key` follows the key rule;
//! - an operation with a body may answer 400 (not JSON), 408 (too slow), 413 (too large) and
//!   422 (against the rules); one with query parameters, 422;
//! - the input rules are the domain's limits (`steward_domain::limits`) and the checks of
//!   `validate`, written as JSON Schema keywords (patterns use only what both ECMAScript and
//!   Python regular expressions read alike);
//! - a provider can only be one this daemon has configured;
//! - a wait (`?wait=`, `GET …/wait?timeout=`) is exactly what the parser accepts up to this
//!   daemon's `http.wait_max`, written as a pattern; an answer after a wait has `settled`
//!   and `workspace` besides its usual fields.
//!
//! A route added later gets these by being what it is; what is specific to it (404, 409, a
//! 422 of its own) goes into its annotation. `scripts/schemathesis.sh` checks the result
//! against the running daemon.

use serde_json::{json, Map, Value};
use steward_domain::limits::{ENTRIES_MAX, KEY_MAX, NAME_MAX, VALUE_MAX};
use utoipa::OpenApi;

use crate::routes::{admin, agent, events, logs, system, waits, workspaces};

/// The OpenAPI description, generated from the handlers and DTOs.
#[derive(OpenApi)]
#[openapi(
    info(title = "Steward", description = "Keeps agent workspaces alive, race-free."),
    paths(
        workspaces::create, workspaces::list, workspaces::get, workspaces::restart,
        workspaces::stop, workspaces::start, workspaces::delete, workspaces::secret_keys,
        workspaces::set_secret, workspaces::remove_secret, workspaces::set_model,
        workspaces::switch_provider, waits::wait, events::events, logs::logs, admin::actors, admin::actor, admin::kill,
        agent::register, agent::heartbeat, system::healthz, system::readyz, system::metrics,
        system::openapi,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["admin", "agent"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// What Rust's `char::is_whitespace` (which `str::trim` uses) calls whitespace, as the
/// members of a regular-expression character class.
const WHITESPACE: &str = r"\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// What `char::is_control` calls a control character, likewise.
const CONTROL: &str = r"\x00-\x1f\x7f-\x9f";

/// An env or secret key: `[A-Za-z_][A-Za-z0-9_]*`, at most `KEY_MAX`, not `STEWARD_…`.
fn key_pattern() -> String {
    format!("^(?!STEWARD_)[A-Za-z_][A-Za-z0-9_]{{0,{}}}$", KEY_MAX - 1)
}

/// A value: at most `VALUE_MAX` bytes in UTF-8 (the schema counts characters: a value of
/// multi-byte characters fits in fewer), no NUL.
fn value() -> Value {
    json!({
        "type": "string",
        "maxLength": VALUE_MAX,
        "pattern": "^[^\\x00]*$",
        "description": format!("At most {VALUE_MAX} bytes in UTF-8, no NUL."),
    })
}

/// A value that is not blank (some character other than whitespace), no NUL.
fn non_blank() -> Value {
    let mut schema = value();
    schema["minLength"] = json!(1);
    schema["pattern"] = json!(format!("^[^\\x00]*[^{WHITESPACE}\\x00][^\\x00]*$"));
    schema["description"] = json!(format!(
        "Not blank; at most {VALUE_MAX} bytes in UTF-8, no NUL."
    ));
    schema
}

/// A map of env entries or secrets.
fn entries(description: &str) -> Value {
    json!({
        "type": "object",
        "description": description,
        "maxProperties": ENTRIES_MAX,
        "propertyNames": { "type": "string", "pattern": key_pattern() },
        "additionalProperties": value(),
    })
}

/// The description served by this daemon, whose providers are `providers` and whose
/// longest wait is `wait_max`.
pub fn describe(providers: &[String], wait_max: std::time::Duration) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            for operation in item.values_mut().filter_map(Value::as_object_mut) {
                complete(operation);
            }
        }
    }
    link_created_workspace(&mut doc);
    constrain(&mut doc, providers);
    describe_waits(&mut doc, wait_max);
    doc
}

/// The wait parameters' exact syntax and bound, and the fields an answer gains after a wait.
fn describe_waits(doc: &mut Value, wait_max: std::time::Duration) {
    let pattern = waits::duration_pattern(wait_max);
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            for operation in item.values_mut().filter_map(Value::as_object_mut) {
                let parameters = operation
                    .get_mut("parameters")
                    .and_then(Value::as_array_mut);
                for parameter in parameters.into_iter().flatten() {
                    let name = parameter["name"].as_str().unwrap_or_default();
                    if parameter["in"] == "query" && matches!(name, "wait" | "timeout") {
                        parameter["schema"] = json!({
                            "type": "string",
                            "pattern": pattern,
                            "description": format!(
                                "A whole number of ms, s or m (250ms, 30s), at most {} (http.wait_max).",
                                humantime::format_duration(wait_max)
                            ),
                        });
                    }
                }
            }
        }
    }
    let schemas = &mut doc["components"]["schemas"];
    for schema in ["IntentAnswer", "SwitchAnswer", "Workspace"] {
        let properties = &mut schemas[schema]["properties"];
        debug_assert!(properties.is_object(), "schema {schema} has properties");
        if !properties.is_object() {
            continue;
        }
        properties["settled"] = json!({
            "type": "boolean",
            "description": "Only after `?wait=`: whether the intent settled before the wait ran out.",
        });
        properties["workspace"] = json!({
            "oneOf": [ { "type": "null" }, { "$ref": "#/components/schemas/Workspace" } ],
            "description": "Only after `?wait=`: the workspace as it is then (`null` once it is gone).",
        });
    }
}

/// Links a create's answer to every operation on one workspace (its `id` fills theirs), so
/// that a client — or a test generator — knows where an id comes from.
fn link_created_workspace(doc: &mut Value) {
    let mut links = Map::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (_, item) in paths.iter().filter(|(path, _)| path.contains("/{id}")) {
            for operation in item.as_object().into_iter().flat_map(|item| item.values()) {
                let Some(operation_id) = operation["operationId"].as_str() else {
                    continue;
                };
                links.insert(
                    operation_id.to_owned(),
                    json!({
                        "operationId": operation_id,
                        "parameters": { "id": "$response.body#/id" },
                    }),
                );
            }
        }
    }
    let created = &mut doc["paths"]["/v1/workspaces"]["post"]["responses"]["201"];
    debug_assert!(!created.is_null(), "POST /v1/workspaces answers 201");
    if created.is_object() {
        created["links"] = Value::Object(links);
    }
}

/// An error answer in the API's shape.
fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } },
    })
}

/// Adds `status` to the operation's responses unless its annotation says more.
fn answers(operation: &mut Map<String, Value>, status: &str, response: Value) {
    if let Some(responses) = operation
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
    {
        responses.entry(status).or_insert(response);
    }
}

/// The rules that hold for every operation of a kind.
fn complete(operation: &mut Map<String, Value>) {
    if operation.contains_key("security") {
        let mut unauthorized = error_response(
            "UNAUTHORIZED: a missing or wrong token, whatever was wrong; checked before any body is read",
        );
        unauthorized["headers"] = json!({
            "WWW-Authenticate": { "required": true, "schema": { "type": "string", "enum": ["Bearer"] } },
        });
        answers(operation, "401", unauthorized);
        let mut unavailable = error_response(
            "OVERLOADED (the workspace's mailbox is full or its actor restarting) or UNAVAILABLE (the store cannot commit, or the daemon is shutting down): nothing was done",
        );
        unavailable["headers"] = json!({
            "Retry-After": { "required": true, "schema": { "type": "string" } },
        });
        answers(operation, "503", unavailable);
    }
    let (mut queried, mut has_id, mut has_key) = (false, false, false);
    if let Some(parameters) = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    {
        for parameter in parameters.iter_mut() {
            match (parameter["in"].as_str(), parameter["name"].as_str()) {
                (Some("path"), Some("id")) => {
                    has_id = true;
                    parameter["schema"] = json!({ "type": "string", "format": "uuid" });
                }
                (Some("path"), Some("key")) => {
                    has_key = true;
                    parameter["schema"] = json!({ "type": "string", "pattern": key_pattern() });
                }
                (Some("header"), Some("Last-Event-ID")) => {
                    // A header is text: absent or an integer, never `null`.
                    parameter["schema"] = json!({ "type": "integer", "format": "int64" });
                }
                (Some("header"), Some("Idempotency-Key")) => {
                    parameter["schema"] = json!({
                        "type": "string",
                        "pattern": "^[\\x21-\\x7e]{1,255}$",
                        "description": "1-255 visible ASCII characters, no spaces.",
                    });
                }
                (Some("query"), _) => queried = true,
                _ => {}
            }
        }
    }
    if has_id {
        answers(
            operation,
            "400",
            error_response("INVALID_ID: the path id is not a UUID"),
        );
    }
    if operation.contains_key("requestBody") {
        answers(
            operation,
            "400",
            error_response("MALFORMED_JSON (or INVALID_ID): the body is not JSON"),
        );
        answers(
            operation,
            "408",
            error_response("REQUEST_TIMEOUT: the body did not arrive in time (http.body_timeout)"),
        );
        answers(
            operation,
            "413",
            error_response("PAYLOAD_TOO_LARGE: the body is larger than http.max_body_bytes"),
        );
    }
    if operation.contains_key("requestBody") || queried || has_key {
        answers(
            operation,
            "422",
            error_response("INVALID_FIELD: a field is missing, unknown, of the wrong type or against the input rules"),
        );
    }
}

/// The input rules, on the schemas they constrain.
fn constrain(doc: &mut Value, providers: &[String]) {
    let schemas = &mut doc["components"]["schemas"];
    let non_blank_name = format!("^[^{CONTROL}]*[^{CONTROL}{WHITESPACE}][^{CONTROL}]*$");
    let provider = json!({ "type": "string", "enum": providers });
    let entries_rule = |what: &str| entries(what);
    for (schema, field, rule) in [
        (
            "CreateWorkspace",
            "name",
            json!({
                "type": "string",
                "minLength": 1,
                "maxLength": NAME_MAX,
                "pattern": non_blank_name,
                "description": format!("1-{NAME_MAX} characters, not blank, no control characters."),
            }),
        ),
        (
            "CreateWorkspace",
            "image",
            nullable(non_blank(), "Image (docker provider)."),
        ),
        (
            "CreateWorkspace",
            "model",
            nullable(non_blank(), "Model handed to the agent as `STEWARD_MODEL`."),
        ),
        (
            "CreateWorkspace",
            "command",
            nullable(
                json!({
                    "type": "array",
                    "minItems": 1,
                    "maxItems": ENTRIES_MAX,
                    "prefixItems": [non_blank()],
                    "items": value(),
                }),
                "The program and its arguments (process, docker), never run through a shell.",
            ),
        ),
        (
            "CreateWorkspace",
            "env",
            entries_rule("Environment variables."),
        ),
        (
            "CreateWorkspace",
            "secrets",
            entries_rule(
                "Secrets, exported to the instance as environment variables; never returned.",
            ),
        ),
        (
            "CreateWorkspace",
            "provider",
            nullable(
                provider.clone(),
                "Provider name (default: the configured `default_provider`).",
            ),
        ),
        ("SwitchProvider", "provider", provider),
        ("SetModel", "model", non_blank()),
        ("SetSecret", "value", value()),
        (
            "Register",
            "url",
            json!({
                "type": "string",
                "maxLength": agent::URL_MAX,
                "pattern": format!("^https?://[^{WHITESPACE}]*$"),
                "description": "Where the daemon reaches the agent: an http(s) URL without whitespace.",
            }),
        ),
    ] {
        let property = &mut schemas[schema]["properties"][field];
        debug_assert!(
            !property.is_null(),
            "{schema}.{field} is not in the generated schema"
        );
        *property = rule;
    }
    let total = steward_domain::limits::ENVIRONMENT_MAX;
    schemas["CreateWorkspace"]["description"] = json!(format!(
        "`POST /v1/workspaces` body. Together, the env entries and secrets (as `KEY=value`), \
         the model and the command's arguments take at most {total} bytes, else 422."
    ));
}

/// `schema` or `null`, described.
fn nullable(schema: Value, description: &str) -> Value {
    json!({ "oneOf": [ { "type": "null" }, schema ], "description": description })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation says what the daemon may answer, and every rule lands on a field that
    /// exists (`describe` asserts it in debug builds: a renamed field would otherwise lose its
    /// rule silently).
    #[test]
    fn every_operation_documents_its_errors_and_every_rule_its_schema() {
        let doc = describe(&["sim".to_owned()], std::time::Duration::from_secs(300));
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("item") {
                operations += 1;
                let responses = operation["responses"].as_object().expect("responses");
                let has = |status: &str| responses.contains_key(status);
                if operation.get("security").is_some() {
                    assert!(has("401") && has("503"), "{method} {path}");
                }
                if path.contains("{id}") {
                    assert!(has("400"), "{method} {path}");
                }
                if operation.get("requestBody").is_some() {
                    assert!(has("400") && has("413") && has("422"), "{method} {path}");
                }
            }
        }
        assert!(operations >= 23, "{operations} operations");
        let restart = &doc["paths"]["/v1/workspaces/{id}/restart"]["post"];
        let wait = restart["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "wait"))
            .expect("restart takes ?wait=");
        assert_eq!(
            wait["schema"]["pattern"],
            json!(waits::duration_pattern(std::time::Duration::from_secs(300)))
        );
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["SwitchProvider"]["properties"]["provider"]["enum"],
            json!(["sim"])
        );
    }
}
