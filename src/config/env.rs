//! `SHARDIS__...` environment overrides: the source layered over the file, and, when what a
//! variable set is refused, the error that names the variable rather than the file.

use super::ConfigError;

/// `SHARDIS__BACKEND__TIMEOUT` overrides `backend.timeout`.
const PREFIX: &str = "SHARDIS";
const SEPARATOR: &str = "__";

/// `SHARDIS__LISTEN=...`, `SHARDIS__ROUTING__HASH=...`, `SHARDIS__BACKEND__TIMEOUT=...`.
pub(super) fn source() -> config::Environment {
    config::Environment::with_prefix(PREFIX)
        .prefix_separator(SEPARATOR)
        .separator(SEPARATOR)
        .try_parsing(true)
}

/// A `SHARDIS__...` variable that is set, and the key it overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Override {
    pub var: String,
    /// As the `config` crate reads it: lower case, sections separated by dots.
    pub key: String,
}

/// Every override set in this process's environment.
pub(super) fn overrides() -> Vec<Override> {
    std::env::vars_os()
        .filter_map(|(var, _)| Override::of(&var.into_string().ok()?))
        .collect()
}

impl Override {
    /// `var` read the way [`source`] reads it: the prefix in any case, the rest lower-cased,
    /// `__` between sections; `None` without the prefix.
    pub(super) fn of(var: &str) -> Option<Override> {
        let lower = var.to_lowercase();
        let prefix = format!("{PREFIX}{SEPARATOR}").to_lowercase();
        let rest = lower.strip_prefix(&prefix)?;
        Some(Override {
            var: var.to_string(),
            key: rest.replace(SEPARATOR, "."),
        })
    }
}

/// `e`, naming the variable it comes from when the key it is about was set by one of
/// `overrides` (the environment wins over the file, so the value refused is the variable's).
pub(super) fn blame(e: ConfigError, overrides: &[Override]) -> ConfigError {
    let culprit = match &e {
        ConfigError::Invalid { key, .. } => overrides.iter().find(|o| &o.key == key),
        ConfigError::Load(load) => match about(load) {
            // An unknown key may also be a section of its own (`SHARDIS__BACKNED__TIMEOUT`).
            Some(About::Unknown(key)) => overrides.iter().find(|o| {
                o.key == key
                    || o.key
                        .strip_prefix(key.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            }),
            Some(About::Value(key)) => overrides.iter().find(|o| o.key == key),
            None => None,
        },
        ConfigError::Env { .. } => None,
    };
    match culprit {
        Some(o) => ConfigError::Env {
            var: o.var.clone(),
            problem: e.to_string(),
        },
        None => e,
    }
}

/// What a load error is about.
#[derive(Debug, PartialEq, Eq)]
enum About {
    /// A key the schema does not have, with its full path.
    Unknown(String),
    /// The value of this key.
    Value(String),
}

fn about(e: &config::ConfigError) -> Option<About> {
    let (message, section) = match e {
        config::ConfigError::Type { key, .. } => return key.clone().map(About::Value),
        config::ConfigError::At { error, key, .. } => (error.to_string(), key.clone()),
        config::ConfigError::Message(message) => (message.clone(), None),
        _ => return None,
    };
    // serde's wording: "unknown field `timeoutt`, expected one of ...".
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field);
    match (unknown, section) {
        (Some(field), Some(section)) => Some(About::Unknown(format!("{section}.{field}"))),
        (Some(field), None) => Some(About::Unknown(field.to_string())),
        (None, key) => key.map(About::Value),
    }
}
