//! Client users (`[[users]]`) and the passwords they and the nodes use. What a user may run
//! is checked by [`crate::session::acl`]; this is only what the file says.

use serde::Deserialize;

use super::check::invalid;
use super::ConfigError;

/// A password: compared and sent, never printed (its `Debug` is `<redacted>`), so it cannot
/// reach a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ReadOnly,
    ReadWrite,
    Admin,
}

/// One `[[users]]` entry. The checks it drives are [`User::check`], in [`crate::session::acl`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password: Secret,
    pub role: Role,
    /// Keys this user may name; empty for every key.
    #[serde(default)]
    pub key_prefixes: Vec<String>,
    /// Pub/sub channels this user may publish to, subscribe to or ask about; empty for every
    /// channel. When not given, the key prefixes: a tenant's channels are named like its keys.
    #[serde(default)]
    pub channel_prefixes: Option<Vec<String>>,
    /// Whether a user other than `admin` may run scripts and functions (EVAL, EVALSHA, FCALL
    /// and their read-only forms, SCRIPT LOAD): unconfined, see the module's doc.
    #[serde(default)]
    pub allow_scripts: bool,
}

/// The top-level `password` and the `[[users]]`: no empty password, every user named once,
/// without spaces, and no user `default` beside the top-level password (it is that
/// password's user).
pub(super) fn check(password: Option<&Secret>, users: &[User]) -> Result<(), ConfigError> {
    if password.is_some_and(|p| p.expose().is_empty()) {
        return Err(invalid("password", "empty; leave it out for no password"));
    }
    for (i, u) in users.iter().enumerate() {
        let key = format!("users[{i}]");
        if u.name.is_empty() || u.name.contains(|c: char| c.is_whitespace()) {
            return Err(invalid(format!("{key}.name"), "empty or has spaces"));
        }
        if u.password.expose().is_empty() {
            return Err(invalid(format!("{key}.password"), "empty"));
        }
        if u.name == "default" && password.is_some() {
            return Err(invalid(
                format!("{key}.name"),
                "\"default\" is the user of the top-level password",
            ));
        }
        if users[..i].iter().any(|o| o.name == u.name) {
            return Err(invalid(
                format!("{key}.name"),
                format!("{:?} is named twice", u.name),
            ));
        }
    }
    Ok(())
}
