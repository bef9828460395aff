//! Input rules of the API: names, keys and sizes a user can get wrong, each answered with
//! a 422 that says which field and why. The limits are the domain's
//! ([`steward_domain::limits`]); counts and the total size of a workspace's environment are
//! checked again by its actor on every change, against what it holds.

use steward_domain::limits::{ENTRIES_MAX, KEY_MAX, NAME_MAX, VALUE_MAX};

use crate::ApiError;

fn invalid(message: String) -> ApiError {
    ApiError::InvalidField(message)
}

/// A workspace name: 1–128 characters, no control characters.
pub fn name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty()
        || name.chars().count() > NAME_MAX
        || name.chars().any(char::is_control)
    {
        return Err(invalid(format!(
            "name must be 1-{NAME_MAX} printable characters"
        )));
    }
    Ok(())
}

/// An env or secret key: a POSIX variable name, not in the reserved `STEWARD_` namespace.
pub fn key(field: &str, key: &str) -> Result<(), ApiError> {
    let mut chars = key.chars();
    let valid = key.len() <= KEY_MAX
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(invalid(format!(
            "{field} key {key:?} must match [A-Za-z_][A-Za-z0-9_]* (max {KEY_MAX})"
        )));
    }
    if key.starts_with("STEWARD_") {
        return Err(invalid(format!(
            "{field} key {key:?} is reserved (STEWARD_ prefix)"
        )));
    }
    Ok(())
}

/// A bounded text value (no NUL, which no environment can hold).
pub fn value(field: &str, value: &str) -> Result<(), ApiError> {
    if value.len() > VALUE_MAX || value.contains('\0') {
        return Err(invalid(format!(
            "{field} must be at most {VALUE_MAX} bytes without NUL"
        )));
    }
    Ok(())
}

/// A non-empty bounded text value.
pub fn non_empty(field: &str, v: &str) -> Result<(), ApiError> {
    if v.trim().is_empty() {
        return Err(invalid(format!("{field} must not be empty")));
    }
    value(field, v)
}

/// At most `ENTRIES_MAX` entries.
pub fn entries(field: &str, n: usize) -> Result<(), ApiError> {
    if n > ENTRIES_MAX {
        return Err(invalid(format!(
            "{field} has more than {ENTRIES_MAX} entries"
        )));
    }
    Ok(())
}

/// A command: at least the program, each argument bounded.
pub fn command(command: &[String]) -> Result<(), ApiError> {
    if command.is_empty() || command[0].trim().is_empty() {
        return Err(invalid("command must name a program".into()));
    }
    entries("command", command.len())?;
    command
        .iter()
        .try_for_each(|arg| value("command argument", arg))
}
