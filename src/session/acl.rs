//! Client users: who may run what, on which keys.
//!
//! A user has a password, a role and, optionally, key prefixes. The roles are coarse, as
//! predixy's are: `read-only` runs commands Redis declares read-only; `read-write` runs any
//! data command; `admin` also runs the proxy's and the fleet's administration (SHARDIS RELOAD,
//! FLUSHALL/FLUSHDB and KEYS where allowed, CLIENT KILL and LIST, CONFIG, SLOWLOG and LATENCY,
//! and what changes or shows the code every tenant runs: FUNCTION LOAD / DELETE / FLUSH /
//! RESTORE / DUMP / STATS, FUNCTION LIST WITHCODE, SCRIPT FLUSH). With key prefixes, every key a command names must start with one of
//! them, SORT's BY and GET patterns too, and commands that walk the whole keyspace (SCAN, KEYS,
//! RANDOMKEY) are refused. The checks run when a command is read, before it is queued in a
//! transaction or sent anywhere.
//!
//! Scripts are not confined: a Lua script (or function) names keys at run time, which no check
//! here sees, and may run any command, FLUSHALL and KEYS included. So a user other than `admin`
//! runs scripts only when its entry says `allow_scripts = true`, which trusts it with every key
//! and command of the shards its scripts run on.

use bytes::Bytes;

use crate::command::spec::flags::{ADMIN, READONLY, WRITE};
use crate::command::{identify, key_positions, CommandId};
use crate::config::{Role, User};

/// Commands that act on the whole fleet or on other clients, or change or show the code other
/// tenants run: `admin` only.
const ADMIN_ONLY: &[&str] = &[
    "script|kill",
    "function|kill",
    "flushall",
    "flushdb",
    "keys",
    "client|kill",
    "client|list",
    "function|load",
    "function|delete",
    "function|flush",
    "function|restore",
    "function|dump",
    "script|flush",
    // The running script's name and arguments, whichever tenant runs it.
    "function|stats",
];

/// Commands that run code: refused to a user other than `admin` unless `allow_scripts`.
const SCRIPTING: &[&str] = &[
    "eval",
    "evalsha",
    "eval_ro",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
    "script|load",
];

/// Commands that walk every key: refused to a user limited to key prefixes.
const WHOLE_KEYSPACE: &[&str] = &["scan", "keys", "randomkey"];

impl User {
    /// `Err(reply)` when this user may not run `args` (named `cmd`, with Redis's flags
    /// `flags`).
    pub fn check(&self, args: &[Bytes], cmd: CommandId, flags: u32) -> Result<(), String> {
        let name = cmd.name();
        let with_code =
            name == "function|list" && args.iter().any(|a| a.eq_ignore_ascii_case(b"withcode"));
        let admin = cmd == CommandId::admin()
            || flags & ADMIN != 0
            || ADMIN_ONLY.contains(&name)
            || with_code;
        let allowed = match self.role {
            Role::Admin => true,
            Role::ReadWrite => !admin,
            Role::ReadOnly => {
                !admin && (flags & READONLY != 0 && flags & WRITE == 0 || keyless_harmless(name))
            }
        };
        if !allowed {
            return Err(format!(
                "NOPERM User {} has no permissions to run the '{name}' command",
                self.name
            ));
        }
        // FENCED runs the command it wraps: that command must pass every check too.
        if name == "fenced" && args.len() > 3 {
            let inner = &args[3..];
            let id = identify(inner);
            let flags = id.spec().map_or(0, |s| s.flags);
            self.check(inner, id, flags)?;
        }
        if self.role != Role::Admin && !self.allow_scripts && SCRIPTING.contains(&name) {
            return Err(format!(
                "NOPERM User {} has no permissions to run the '{name}' command: scripts are not confined to a user's keys or commands; allow_scripts in its [[users]] entry allows them",
                self.name
            ));
        }
        self.check_channels(args, name)?;
        if self.key_prefixes.is_empty() {
            return Ok(());
        }
        if WHOLE_KEYSPACE.contains(&name) {
            return Err(format!(
                "NOPERM User {} has no permissions to run the '{name}' command: it is limited to key prefixes",
                self.name
            ));
        }
        let outside = keys_named(args, cmd).iter().any(|k| {
            !self
                .key_prefixes
                .iter()
                .any(|p| k.starts_with(p.as_bytes()))
        });
        if outside {
            return Err(
                "NOPERM this user has no permissions to access one of the keys used as arguments"
                    .into(),
            );
        }
        if matches!(name, "sort" | "sort_ro") {
            for (option, pattern) in crate::command::sort_patterns(args) {
                // Only what stands before the first wildcard is known: the keys a pattern
                // forms must all start with one of the user's prefixes.
                let fixed = crate::command::pattern_fixed_part(&pattern);
                if !self
                    .key_prefixes
                    .iter()
                    .any(|p| fixed.starts_with(p.as_bytes()))
                {
                    return Err(format!(
                        "ERR {option} option of SORT denied due to insufficient ACL permissions."
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Connection and introspection commands Redis flags neither read-only nor write, which a
/// read-only user still needs (PING, HELLO, AUTH, CLIENT SETNAME, MULTI, ...): anything
/// without the WRITE flag that is not an admin command passes the role check by its flags;
/// these are the keyless ones Redis leaves unflagged.
fn keyless_harmless(name: &str) -> bool {
    let base = name.split('|').next().unwrap_or(name);
    matches!(
        base,
        "ping"
            | "echo"
            | "hello"
            | "auth"
            | "quit"
            | "reset"
            | "select"
            | "client"
            | "command"
            | "info"
            | "multi"
            | "exec"
            | "discard"
            | "watch"
            | "unwatch"
            | "subscribe"
            | "unsubscribe"
            | "psubscribe"
            | "punsubscribe"
            | "ssubscribe"
            | "sunsubscribe"
            | "wait"
            | "time"
            | "lolwut"
            | "role"
            | "lastsave"
            | "acl"
            | "lock.status"
            | "lock.token"
    )
}

impl User {
    /// The channel prefixes in force: `channel_prefixes`, else the key prefixes.
    fn channel_prefixes(&self) -> &[String] {
        self.channel_prefixes
            .as_deref()
            .unwrap_or(&self.key_prefixes)
    }

    /// With channel prefixes, every channel a command publishes to, subscribes to or asks
    /// about must start with one, and a pattern (PSUBSCRIBE, PUBSUB CHANNELS) must, in the part
    /// before its first wildcard. Listing every channel (PUBSUB CHANNELS with no pattern) is
    /// refused. Unsubscribing from anything is allowed: it reveals nothing.
    fn check_channels(&self, args: &[Bytes], name: &str) -> Result<(), String> {
        let prefixes = self.channel_prefixes();
        if prefixes.is_empty() {
            return Ok(());
        }
        let within = |text: &[u8]| prefixes.iter().any(|p| text.starts_with(p.as_bytes()));
        let ok = match name {
            "publish" | "spublish" => args.get(1).is_some_and(|c| within(c)),
            "subscribe" | "ssubscribe" => args[1..].iter().all(|c| within(c)),
            "pubsub|numsub" | "pubsub|shardnumsub" => args[2..].iter().all(|c| within(c)),
            "psubscribe" => args[1..].iter().all(|p| within(fixed_part(p))),
            "pubsub|channels" | "pubsub|shardchannels" => {
                args.get(2).is_some_and(|p| within(fixed_part(p)))
            }
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(
                "NOPERM this user has no permissions to access one of the channels used as arguments"
                    .into(),
            )
        }
    }
}

/// What every channel a glob pattern matches starts with: the part before its first `*`, `?`,
/// `[` or `\` (an escape is taken as a wildcard: conservative).
fn fixed_part(pattern: &[u8]) -> &[u8] {
    let end = pattern
        .iter()
        .position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
        .unwrap_or(pattern.len());
    &pattern[..end]
}

/// Every key `args` (the command `cmd`) names, as the command table locates them; the lock
/// commands name their lock key, and FENCED also the keys of the command it wraps.
pub fn keys_named(args: &[Bytes], cmd: CommandId) -> Vec<Bytes> {
    let Some(spec) = cmd.spec() else {
        // Not in the table: a lock command, or SHARDIS (keyless).
        if !crate::command::lock::COMMANDS
            .iter()
            .any(|(name, ..)| *name == cmd.name())
        {
            return Vec::new();
        }
        let mut keys: Vec<Bytes> = args.get(1).cloned().into_iter().collect();
        if cmd.name() == "fenced" && args.len() > 3 {
            keys.extend(keys_named(&args[3..], identify(&args[3..])));
        }
        return keys;
    };
    match key_positions(spec, args) {
        Ok(positions) => positions.into_iter().map(|i| args[i].clone()).collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command line's arguments, with the flags and id the session has for it: from
    /// planning, which knows the proxy's own commands.
    fn planned(line: &str) -> (Vec<Bytes>, u32, CommandId) {
        let args: Vec<Bytes> = line
            .split(' ')
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        let router = crate::config::Config::from_toml("[[shards]]\nprimary = \"127.0.0.1:1\"")
            .unwrap()
            .router();
        let (_, flags, cmd) = crate::command::plan_args(&args, &router, &Default::default());
        (args, flags, cmd)
    }

    fn keys(line: &str) -> Vec<String> {
        let (args, _, cmd) = planned(line);
        keys_named(&args, cmd)
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    /// A user as a `[[users]]` entry of a config file makes it.
    fn user(role: Role, prefixes: &[&str], allow_scripts: bool) -> User {
        let role = match role {
            Role::ReadOnly => "read-only",
            Role::ReadWrite => "read-write",
            Role::Admin => "admin",
        };
        let prefixes: Vec<String> = prefixes.iter().map(|p| format!("{p:?}")).collect();
        let toml = format!(
            "[[users]]\nname = \"u\"\npassword = \"p\"\nrole = \"{role}\"\nkey_prefixes = [{}]\nallow_scripts = {allow_scripts}\n[[shards]]\nprimary = \"127.0.0.1:1\"",
            prefixes.join(", ")
        );
        crate::config::Config::from_toml(&toml)
            .unwrap()
            .users
            .remove(0)
    }

    fn check(u: &User, line: &str) -> Result<(), String> {
        let (args, flags, cmd) = planned(line);
        u.check(&args, cmd, flags)
    }

    #[test]
    fn scripts_need_allow_scripts_and_tenants_code_is_admin_only() {
        let tenant = user(Role::ReadWrite, &["app:"], false);
        for s in [
            "EVAL s 1 app:{x}",
            "EVALSHA 0123 0",
            "EVAL_RO s 0",
            "FCALL f 1 app:x",
            "FCALL_RO f 0",
            "SCRIPT LOAD s",
        ] {
            let e = check(&tenant, s).unwrap_err();
            assert!(
                e.starts_with("NOPERM") && e.contains("allow_scripts"),
                "{s}: {e}"
            );
        }
        let trusted = user(Role::ReadWrite, &["app:"], true);
        assert_eq!(check(&trusted, "EVAL s 1 app:{x}"), Ok(()));
        assert!(
            check(&trusted, "EVAL s 1 billing:x").is_err(),
            "declared keys"
        );
        // Changing or reading other tenants' code is admin-only, allow_scripts or not.
        for s in [
            "FUNCTION LOAD REPLACE code",
            "FUNCTION DELETE lib",
            "FUNCTION FLUSH",
            "FUNCTION DUMP",
            "FUNCTION RESTORE payload",
            "FUNCTION LIST WITHCODE",
            "SCRIPT FLUSH",
        ] {
            for u in [&tenant, &trusted, &user(Role::ReadWrite, &[], true)] {
                let e = check(u, s).unwrap_err();
                assert!(e.starts_with("NOPERM"), "{s}: {e}");
            }
            assert_eq!(check(&user(Role::Admin, &[], false), s), Ok(()), "{s}");
        }
        assert_eq!(check(&trusted, "FUNCTION LIST"), Ok(()));
    }

    #[test]
    fn sort_patterns_stay_within_the_users_prefixes() {
        let tenant = user(Role::ReadWrite, &["app:"], false);
        let ro = user(Role::ReadOnly, &["app:"], false);
        assert_eq!(
            check(&tenant, "SORT app:{a}l BY app:{a}w_* GET app:{a}u:* GET #"),
            Ok(())
        );
        assert_eq!(check(&ro, "SORT_RO app:{a}l BY nosort GET #"), Ok(()));
        for (u, s, option) in [
            (&tenant, "SORT app:{a}l BY nosort GET bill:card:*", "GET"),
            (&ro, "SORT_RO app:{a}l GET *", "GET"),
            (&ro, "SORT_RO app:{a}l BY ap* GET #", "BY"),
            (
                &tenant,
                "SORT app:{a}l GET app:{a}u:* GET billing:*->card",
                "GET",
            ),
        ] {
            assert_eq!(
                check(u, s),
                Err(format!(
                    "ERR {option} option of SORT denied due to insufficient ACL permissions."
                )),
                "{s}"
            );
        }
    }

    #[test]
    fn channels_stay_within_the_users_prefixes() {
        let tenant = user(Role::ReadWrite, &["app:"], false);
        for ok in [
            "PUBLISH app:news hi",
            "SPUBLISH app:{s}news hi",
            "SUBSCRIBE app:a app:b",
            "SSUBSCRIBE app:{s}a",
            "PSUBSCRIBE app:* app:n?ws",
            "PUBSUB CHANNELS app:*",
            "PUBSUB NUMSUB app:a",
            "UNSUBSCRIBE billing:news",
            "PUBSUB NUMPAT",
        ] {
            assert_eq!(check(&tenant, ok), Ok(()), "{ok}");
        }
        for refused in [
            "PUBLISH billing:news hi",
            "SUBSCRIBE app:a billing:b",
            "SSUBSCRIBE billing:{s}a",
            "PSUBSCRIBE *",
            "PSUBSCRIBE ap*",
            "PSUBSCRIBE app\\:*",
            "PUBSUB CHANNELS",
            "PUBSUB CHANNELS *",
            "PUBSUB SHARDNUMSUB billing:a",
            "FENCED lock:app 1 PUBLISH billing:news hi",
        ] {
            let e = check(&tenant, refused).unwrap_err();
            assert!(
                e.starts_with("NOPERM") && e.contains("channels"),
                "{refused}: {e}"
            );
        }
        // No prefixes: every channel.
        assert_eq!(
            check(&user(Role::ReadWrite, &[], false), "PSUBSCRIBE *"),
            Ok(())
        );
    }

    #[test]
    fn keys_named_follows_the_table_the_lock_commands_and_fenced() {
        assert_eq!(keys("SET a 1"), ["a"]);
        assert_eq!(keys("MSET a 1 b 2"), ["a", "b"]);
        assert_eq!(keys("OBJECT ENCODING k"), ["k"]);
        assert_eq!(keys("LOCK.ACQUIRE lock:x me 100"), ["lock:x"]);
        assert_eq!(
            keys("FENCED lock:{x} 7 MSET d:{x} 1 e:{x} 2"),
            ["lock:{x}", "d:{x}", "e:{x}"]
        );
        assert!(keys("SHARDIS RELOAD").is_empty());
        assert!(keys("PING").is_empty());
    }
}
