//! Reading a Python elhaz YAML document: sections as typed fields, with pydantic's coercions
//! (numeric strings, whole floats) and messages that name the field, never its value.

use serde_yaml_ng::{Mapping, Value};

use super::{ConvertError, invalid};

/// The value under any YAML tags (`!tag value` reads as `value`).
pub(super) fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => untag(&t.value),
        other => other,
    }
}

/// What a value is, for messages that must not quote it.
pub(super) fn kind(v: &Value) -> &'static str {
    match untag(v) {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// One mapping of the document, with its name for messages.
pub(super) struct Section<'a> {
    pub(super) name: &'static str,
    pub(super) map: &'a Mapping,
}

impl<'a> Section<'a> {
    /// Rejects keys the Python model does not know (pydantic `extra = "forbid"`).
    pub(super) fn check_keys(&self, allowed: &[&str]) -> Result<(), ConvertError> {
        for k in self.map.keys() {
            match untag(k) {
                Value::String(s) if allowed.contains(&s.as_str()) => {}
                Value::String(s) => {
                    return Err(invalid(format!(
                        "unknown key `{s}` in {} (Python elhaz rejects it too); expected one of: {}",
                        self.name,
                        allowed.join(", ")
                    )));
                }
                other => {
                    return Err(invalid(format!(
                        "{} has a key that is {}, not a name",
                        self.name,
                        kind(other)
                    )));
                }
            }
        }
        Ok(())
    }

    /// The value of `key`, `None` when absent or null.
    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map
            .get(key)
            .map(untag)
            .filter(|v| !matches!(v, Value::Null))
    }

    pub(super) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub(super) fn string(&self, key: &str) -> Result<Option<String>, ConvertError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(invalid(format!(
                "{}.{key} must be a string, not {}",
                self.name,
                kind(other)
            ))),
        }
    }

    pub(super) fn int(&self, key: &str) -> Result<Option<u64>, ConvertError> {
        let bad = |what: &str| {
            invalid(format!(
                "{}.{key} must be a whole number of seconds, not {what}",
                self.name
            ))
        };
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
                (Some(u), _) => Ok(Some(u)),
                // pydantic accepts 3600.0
                (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f < 1e12 => Ok(Some(f as u64)),
                _ => Err(bad("a negative or fractional number")),
            },
            // pydantic's lax mode accepts numeric strings
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad("that string")),
            Some(other) => Err(bad(kind(other))),
        }
    }

    pub(super) fn strings(&self, key: &str) -> Result<Vec<String>, ConvertError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Sequence(items)) => items
                .iter()
                .map(|v| match untag(v) {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(invalid(format!(
                        "{}.{key} must be a list of strings; found {}",
                        self.name,
                        kind(other)
                    ))),
                })
                .collect(),
            Some(other) => Err(invalid(format!(
                "{}.{key} must be a list of strings, not {}",
                self.name,
                kind(other)
            ))),
        }
    }

    pub(super) fn section(&self, key: &'static str) -> Result<Option<Section<'a>>, ConvertError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Mapping(map)) => Ok(Some(Section { name: key, map })),
            Some(other) => Err(invalid(format!(
                "{key} must be a mapping, not {}",
                kind(other)
            ))),
        }
    }
}

/// Parses a checked string type, naming the YAML field on error.
pub(super) fn checked<T: std::str::FromStr<Err = String>>(
    field: &str,
    v: Option<String>,
) -> Result<Option<T>, ConvertError> {
    v.map(|s| s.parse::<T>().map_err(|e| invalid(format!("{field}: {e}"))))
        .transpose()
}

/// The static-key fields present in a section (names only).
pub(super) fn static_keys(sec: Option<&Section<'_>>) -> Vec<&'static str> {
    let Some(sec) = sec else { return Vec::new() };
    [
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
    ]
    .into_iter()
    .filter(|k| sec.has(k))
    .collect()
}
