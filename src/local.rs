//! Commands the proxy answers itself: connection state (HELLO, AUTH, SELECT, CLIENT ...) and the
//! few CONFIG GET parameters clients ask about on connect.

use bytes::Bytes;

use crate::client::Session;
use crate::command::Local;
use crate::command::{printable, wrong_arity};
use crate::resp::{encode, parse_i64, Proto, Request, Value};
use crate::server::Proxy;

/// The Redis version whose command set the proxy speaks, reported by HELLO and INFO.
pub const REDIS_COMPAT_VERSION: &str = "7.0.0";

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const NOPASS_AUTH: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";

/// The reply to a locally answered command; may change the session.
pub fn answer(proxy: &Proxy, session: &mut Session, local: Local, req: &Request) -> Bytes {
    let args = req.args();
    match local {
        Local::Ping => match args.len() {
            1 => Bytes::from_static(b"+PONG\r\n"),
            2 => session.reply(Value::Bulk(args[1].clone())),
            _ => error(&wrong_arity("ping")),
        },
        Local::Echo => session.reply(Value::Bulk(args[1].clone())),
        Local::Quit => Bytes::from_static(encode::OK),
        Local::Select => match parse_i64(&args[1]) {
            Some(0) => Bytes::from_static(encode::OK),
            Some(_) => error("ERR SELECT is not allowed in shardis: only database 0 is served"),
            None => error("ERR value is not an integer or out of range"),
        },
        Local::Auth => auth(proxy, session, &args[1..]),
        Local::Hello => hello(proxy, session, &args[1..]),
        Local::Reset => {
            session.proto = Proto::Resp2;
            session.name = None;
            session.authenticated = proxy.config().password.is_none();
            Bytes::from_static(b"+RESET\r\n")
        }
        Local::ClientSetName => match set_name(session, &args[2]) {
            Ok(()) => Bytes::from_static(encode::OK),
            Err(msg) => error(msg),
        },
        Local::ClientGetName => session.reply(match &session.name {
            Some(name) => Value::Bulk(name.clone()),
            None => Value::Null,
        }),
        Local::ClientId => session.reply(Value::Int(session.id as i64)),
        // Checked and acknowledged as Redis 7.2 does; nothing reports it yet (no CLIENT LIST).
        Local::ClientSetInfo => {
            let attr = &args[2];
            if !attr.eq_ignore_ascii_case(b"lib-name") && !attr.eq_ignore_ascii_case(b"lib-ver") {
                return error(&format!(
                    "ERR Unrecognized option '{}'",
                    printable(attr, 64)
                ));
            }
            if !valid_client_attr(&args[3]) {
                return error(&format!(
                    "ERR {} cannot contain spaces, newlines or special characters.",
                    printable(attr, 64)
                ));
            }
            Bytes::from_static(encode::OK)
        }
        Local::ConfigGet => config_get(session, &args[2..]),
    }
}

fn error(msg: &str) -> Bytes {
    encode::error_bytes(msg)
}

fn check_password(proxy: &Proxy, user: Option<&[u8]>, password: &[u8]) -> bool {
    let config = proxy.config();
    let user_ok = user.is_none_or(|u| u == b"default");
    match &config.password {
        Some(expected) => user_ok && expected.as_bytes() == password,
        // No password configured: the default user needs none (as Redis's `nopass`).
        None => user_ok,
    }
}

fn auth(proxy: &Proxy, session: &mut Session, args: &[Bytes]) -> Bytes {
    let (user, password) = match args {
        [password] => {
            if proxy.config().password.is_none() {
                return error(NOPASS_AUTH);
            }
            (None, password)
        }
        [user, password] => (Some(&user[..]), password),
        _ => return error("ERR syntax error"),
    };
    if check_password(proxy, user, password) {
        session.authenticated = true;
        Bytes::from_static(encode::OK)
    } else {
        error(WRONGPASS)
    }
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`
fn hello(proxy: &Proxy, session: &mut Session, args: &[Bytes]) -> Bytes {
    let mut proto = session.proto;
    if let Some(ver) = args.first() {
        proto = match parse_i64(ver) {
            Some(2) => Proto::Resp2,
            Some(3) => Proto::Resp3,
            Some(_) => return error("NOPROTO unsupported protocol version"),
            None => return error("ERR Protocol version is not an integer or out of range"),
        };
    }
    let mut i = 1;
    let mut name = None;
    let mut authenticated = session.authenticated;
    while i < args.len() {
        let opt = &args[i];
        if opt.eq_ignore_ascii_case(b"auth") && i + 2 < args.len() {
            if !check_password(proxy, Some(&args[i + 1]), &args[i + 2]) {
                return error(WRONGPASS);
            }
            authenticated = true;
            i += 3;
        } else if opt.eq_ignore_ascii_case(b"setname") && i + 1 < args.len() {
            name = Some(args[i + 1].clone());
            i += 2;
        } else {
            return error(&format!(
                "ERR Syntax error in HELLO option '{}'",
                printable(opt, 64)
            ));
        }
    }
    if !authenticated {
        return error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    if let Some(name) = name {
        if let Err(msg) = set_name(session, &name) {
            return error(msg);
        }
    }
    session.authenticated = true;
    session.proto = proto;
    let value = Value::Map(vec![
        (Value::bulk("server"), Value::bulk("redis")),
        (Value::bulk("version"), Value::bulk(REDIS_COMPAT_VERSION)),
        (
            Value::bulk("proto"),
            Value::Int(if proto == Proto::Resp3 { 3 } else { 2 }),
        ),
        (Value::bulk("id"), Value::Int(session.id as i64)),
        (Value::bulk("mode"), Value::bulk("standalone")),
        (Value::bulk("role"), Value::bulk("master")),
        (Value::bulk("modules"), Value::Array(Vec::new())),
    ]);
    session.reply(value)
}

fn set_name(session: &mut Session, name: &Bytes) -> Result<(), &'static str> {
    if !valid_client_attr(name) {
        return Err("ERR Client names cannot contain spaces, newlines or special characters.");
    }
    session.name = (!name.is_empty()).then(|| name.clone());
    Ok(())
}

/// Client names and library attributes are printable ASCII with no spaces (Redis's
/// `validateClientAttr`).
fn valid_client_attr(value: &[u8]) -> bool {
    value.iter().all(|b| (b'!'..=b'~').contains(b))
}

/// The parameters the proxy reports: what redis-benchmark and client libraries ask about.
const CONFIG_PARAMS: &[(&str, &str)] = &[("appendonly", "no"), ("databases", "1"), ("save", "")];

fn config_get(session: &Session, patterns: &[Bytes]) -> Bytes {
    let pairs = CONFIG_PARAMS
        .iter()
        .filter(|(name, _)| patterns.iter().any(|p| glob_match(p, name.as_bytes())))
        .map(|(name, value)| (Value::bulk(*name), Value::bulk(*value)))
        .collect();
    session.reply(Value::Map(pairs))
}

/// Case-insensitive glob match with `*` and `?`, as CONFIG GET patterns use.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p].eq_ignore_ascii_case(&text[t])) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn glob() {
        assert!(glob_match(b"save", b"save"));
        assert!(glob_match(b"SAVE", b"save"));
        assert!(glob_match(b"*", b"appendonly"));
        assert!(glob_match(b"append*", b"appendonly"));
        assert!(glob_match(b"s?ve", b"save"));
        assert!(glob_match(b"*o*y", b"appendonly"));
        assert!(!glob_match(b"sav", b"save"));
        assert!(!glob_match(b"x*", b"save"));
    }
}
