//! Durations in the configuration file, in humantime's form: `"500ms"`, `"2s"`, `"1m"`.
//!
//! Read with humantime (as `humantime_serde` reads them), but a value that is not one says what
//! is expected: a bare `timeout = 500` has no unit, and humantime_serde's error only quoted it.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// What a duration must look like, for errors.
pub const EXPECTED: &str = "expected a duration with a unit, such as \"500ms\", \"2s\" or \"1m\"";

/// For `#[serde(with = "duration")]`. A number (TOML's `500`, or `SHARDIS__...=500`) arrives
/// as its text, and is refused for its missing unit.
pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// `text` as a duration, or why it is not one.
pub(super) fn parse(text: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(text)
        .map_err(|_| format!("invalid duration {text:?}: {EXPECTED}"))
}
