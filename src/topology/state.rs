//! The state file: each shard's epoch and current primary, kept across restarts.
//!
//! Written whole on every change: to a temporary file in the same directory, fsynced, renamed
//! over the old one, and the directory fsynced, so a crash leaves either the old or the new
//! file, never a torn one. A failover is recorded here before writes go to the new primary.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardState {
    pub epoch: u64,
    pub primary: String,
    /// Unix time in ms until which the shard grants no lock (the freeze after a failover).
    #[serde(default)]
    pub locks_frozen_until_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Contents {
    shards: BTreeMap<String, ShardState>,
}

pub struct StateFile {
    path: Option<PathBuf>,
    contents: Mutex<Contents>,
}

impl StateFile {
    /// Reads the file if it exists; `None` keeps state in memory only.
    pub fn open(path: Option<PathBuf>) -> Result<StateFile, String> {
        let contents = match &path {
            Some(p) => match std::fs::read(p) {
                Ok(bytes) => serde_json::from_slice(&bytes)
                    .map_err(|e| format!("state file {}: {e}", p.display()))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Contents::default(),
                Err(e) => return Err(format!("state file {}: {e}", p.display())),
            },
            None => Contents::default(),
        };
        Ok(StateFile {
            path,
            contents: Mutex::new(contents),
        })
    }

    pub fn get(&self, shard: &str) -> Option<ShardState> {
        let contents = self.contents.lock().unwrap_or_else(|e| e.into_inner());
        contents.shards.get(shard).cloned()
    }

    /// Records a shard's state durably (when there is a file) before returning.
    pub fn set(&self, shard: &str, state: ShardState) -> Result<(), String> {
        let mut contents = self.contents.lock().unwrap_or_else(|e| e.into_inner());
        let before = contents.shards.insert(shard.to_string(), state);
        let Some(path) = &self.path else {
            return Ok(());
        };
        let result = write_atomically(path, &contents);
        if result.is_err() {
            // Keep memory equal to what is on disk.
            match before {
                Some(b) => contents.shards.insert(shard.to_string(), b),
                None => contents.shards.remove(shard),
            };
        }
        result.map_err(|e| format!("state file {}: {e}", path.display()))
    }
}

fn write_atomically(path: &Path, contents: &Contents) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile_in(&dir, path)?;
    let json = serde_json::to_vec_pretty(contents).map_err(std::io::Error::other)?;
    tmp.1.write_all(&json)?;
    tmp.1.write_all(b"\n")?;
    tmp.1.sync_all()?;
    std::fs::rename(&tmp.0, path)?;
    std::fs::File::open(&dir)?.sync_all()
}

/// A new file next to `path`, named after it and this process.
fn tempfile_in(dir: &Path, path: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let file = std::fs::File::create(&tmp)?;
    Ok((tmp, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_reopen_and_keeps_other_shards() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shardis.state");
        let state = StateFile::open(Some(path.clone())).unwrap();
        let a = ShardState {
            epoch: 3,
            primary: "127.0.0.1:7002".into(),
            locks_frozen_until_ms: 1_800_000_000_000,
        };
        state.set("a", a.clone()).unwrap();
        state
            .set(
                "b",
                ShardState {
                    epoch: 1,
                    primary: "127.0.0.1:7003".into(),
                    locks_frozen_until_ms: 0,
                },
            )
            .unwrap();
        let again = StateFile::open(Some(path.clone())).unwrap();
        assert_eq!(again.get("a"), Some(a));
        assert_eq!(again.get("b").unwrap().epoch, 1);
        assert_eq!(again.get("c"), None);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_corrupt_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, b"{not json").unwrap();
        let err = StateFile::open(Some(path)).err().unwrap();
        assert!(err.contains("state file"), "{err}");
    }
}
