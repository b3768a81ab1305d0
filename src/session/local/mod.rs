//! Commands the proxy answers itself: connection state (HELLO, AUTH, SELECT, CLIENT ...), ROLE
//! and ACL WHOAMI.

mod client_list;
pub mod info;

use std::sync::Arc;

use bytes::Bytes;

use crate::command::Local;
use crate::command::{printable, wrong_arity};
use crate::proxy::clients::ClientEntry;
use crate::proxy::Proxy;
use crate::resp::{encode, parse_i64, Proto, Request, Value};
use crate::session::Session;

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
            session.authenticated = proxy.config().open_to_all();
            session.user = None;
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
        // Checked and stored as Redis 7.2 does; CLIENT LIST shows it.
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
            if attr.eq_ignore_ascii_case(b"lib-name") {
                session.lib_name = Some(args[3].clone());
            } else {
                session.lib_ver = Some(args[3].clone());
            }
            Bytes::from_static(encode::OK)
        }
        Local::Role => session.reply(Value::Array(vec![
            Value::bulk("master"),
            Value::Int(0),
            Value::Array(Vec::new()),
        ])),
        Local::AclWhoami => session.reply(Value::Bulk(Bytes::from(
            session
                .user
                .as_ref()
                .map_or_else(|| "default".to_string(), |u| u.name.clone()),
        ))),
        Local::Reload => match proxy.reload() {
            Ok(report) => session.reply(Value::Bulk(Bytes::from(report))),
            Err(e) => error(&format!("ERR reload refused: {e}")),
        },
        Local::ClientList => client_list(proxy, session, &args[2..]),
        Local::ClientInfo => {
            let line = proxy
                .clients
                .get(session.id)
                .map(|e| client_list::line(&e))
                .unwrap_or_default();
            session.reply(Value::Verbatim(Bytes::from(line)))
        }
        Local::ClientKill => client_kill(proxy, session, &args[2..]),
        Local::ClientNoEvict => {
            let on = args[2].eq_ignore_ascii_case(b"on");
            if on || args[2].eq_ignore_ascii_case(b"off") {
                Bytes::from_static(encode::OK)
            } else {
                error("ERR syntax error")
            }
        }
    }
}

/// `CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id ...]`: the proxy's own clients.
fn client_list(proxy: &Proxy, session: &Session, args: &[Bytes]) -> Bytes {
    let mut clients = proxy.clients.all();
    match args.first() {
        None => {}
        Some(opt) if opt.eq_ignore_ascii_case(b"type") && args.len() == 2 => {
            let Some(pubsub) = client_type(&args[1]) else {
                return error(&format!(
                    "ERR Unknown client type '{}'",
                    printable(&args[1], 64)
                ));
            };
            clients.retain(|c| pubsub == Some(c.is_pubsub()));
        }
        Some(opt) if opt.eq_ignore_ascii_case(b"id") && args.len() >= 2 => {
            let mut ids = Vec::new();
            for id in &args[1..] {
                match parse_i64(id) {
                    Some(id) if id > 0 => ids.push(id as u64),
                    _ => return error("ERR Invalid client ID"),
                }
            }
            clients.retain(|c| ids.contains(&c.id));
        }
        Some(_) => return error("ERR syntax error"),
    }
    let text: String = clients.iter().map(|c| client_list::line(c)).collect();
    session.reply(Value::Verbatim(Bytes::from(text)))
}

/// A CLIENT LIST / KILL type: `Some(true)` pub/sub clients, `Some(false)` normal ones,
/// `None` a type the proxy has none of (master, replica); unknown types are an error.
fn client_type(name: &[u8]) -> Option<Option<bool>> {
    let name = name.to_ascii_lowercase();
    match &name[..] {
        b"normal" => Some(Some(false)),
        b"pubsub" => Some(Some(true)),
        b"master" | b"replica" | b"slave" => Some(None),
        _ => None,
    }
}

/// `CLIENT KILL addr` (old form) or `CLIENT KILL <filter> <value> ...`.
fn client_kill(proxy: &Proxy, session: &mut Session, args: &[Bytes]) -> Bytes {
    let all = proxy.clients.all();
    if let [addr] = args {
        let target = all
            .iter()
            .find(|c| c.addr.to_string().as_bytes() == &addr[..]);
        return match target {
            Some(c) => {
                kill(session, c);
                Bytes::from_static(encode::OK)
            }
            None => error("ERR No such client"),
        };
    }
    if args.len() % 2 != 0 {
        return error("ERR syntax error");
    }
    let mut id = None;
    let mut addr = None;
    let mut laddr = None;
    let mut pubsub: Option<Option<bool>> = None;
    let mut skipme = true;
    let mut max_age = None;
    for pair in args.chunks(2) {
        let (opt, value) = (pair[0].to_ascii_lowercase(), &pair[1]);
        match &opt[..] {
            b"id" => match parse_i64(value) {
                Some(n) if n > 0 => id = Some(n as u64),
                _ => return error("ERR client-id should be greater than 0"),
            },
            b"addr" => addr = Some(value.clone()),
            b"laddr" => laddr = Some(value.clone()),
            b"type" => match client_type(value) {
                Some(t) => pubsub = Some(t),
                None => {
                    return error(&format!(
                        "ERR Unknown client type '{}'",
                        printable(value, 64)
                    ))
                }
            },
            b"user" => {
                if &value[..] != b"default" {
                    return error(&format!("ERR No such user '{}'", printable(value, 64)));
                }
            }
            b"skipme" => match &value.to_ascii_lowercase()[..] {
                b"yes" => skipme = true,
                b"no" => skipme = false,
                _ => return error("ERR syntax error"),
            },
            b"maxage" => match parse_i64(value) {
                Some(n) if n >= 0 => max_age = Some(n as u64),
                _ => return error("ERR syntax error"),
            },
            _ => return error("ERR syntax error"),
        }
    }
    let mut killed = 0;
    for c in all {
        let matches = id.is_none_or(|id| c.id == id)
            && addr
                .as_ref()
                .is_none_or(|a| c.addr.to_string().as_bytes() == &a[..])
            && laddr
                .as_ref()
                .is_none_or(|a| c.laddr.to_string().as_bytes() == &a[..])
            && pubsub.is_none_or(|t| t == Some(c.is_pubsub()))
            && max_age.is_none_or(|age| c.age_secs() >= age)
            && !(skipme && c.id == session.id);
        if matches {
            kill(session, &c);
            killed += 1;
        }
    }
    session.reply(Value::Int(killed))
}

/// Closes a client; this very session only after its reply, as Redis does.
fn kill(session: &mut Session, client: &ClientEntry) {
    if client.id == session.id {
        session.close_after_reply = true;
    } else {
        client.kill();
    }
}

fn error(msg: &str) -> Bytes {
    encode::error_bytes(msg)
}

/// Who `user`/`password` authenticate as: `Some(None)` for the default user (the top-level
/// password; with no password and no users, anyone, as Redis's `nopass`), `Some(Some(u))` for
/// a `[[users]]` entry, `None` when nobody.
fn check_password(
    proxy: &Proxy,
    user: Option<&[u8]>,
    password: &[u8],
) -> Option<Option<Arc<crate::config::User>>> {
    let config = proxy.config();
    match user {
        None | Some(b"default") => match &config.password {
            Some(expected) => (expected.expose().as_bytes() == password).then_some(None),
            None => config.users.is_empty().then_some(None),
        },
        Some(name) => config
            .users
            .iter()
            .find(|u| u.name.as_bytes() == name && u.password.expose().as_bytes() == password)
            .map(|u| Some(Arc::new(u.clone()))),
    }
}

fn auth(proxy: &Proxy, session: &mut Session, args: &[Bytes]) -> Bytes {
    let (user, password) = match args {
        [password] => {
            if proxy.config().open_to_all() {
                return error(NOPASS_AUTH);
            }
            (None, password)
        }
        [user, password] => (Some(&user[..]), password),
        _ => return error("ERR syntax error"),
    };
    match check_password(proxy, user, password) {
        Some(who) => {
            session.authenticated = true;
            session.user = who;
            Bytes::from_static(encode::OK)
        }
        None => error(WRONGPASS),
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
    let mut user = None;
    while i < args.len() {
        let opt = &args[i];
        if opt.eq_ignore_ascii_case(b"auth") && i + 2 < args.len() {
            match check_password(proxy, Some(&args[i + 1]), &args[i + 2]) {
                Some(who) => user = Some(who),
                None => return error(WRONGPASS),
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
    if let Some(who) = user {
        session.user = who;
    }
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
