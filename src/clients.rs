//! The proxy's own clients, as CLIENT LIST, CLIENT INFO and CLIENT KILL see them.
//!
//! Each session registers an entry for its lifetime and refreshes what it reports once per
//! batch of commands (not per command), so the registry costs the hot path one uncontended
//! lock per read from the socket.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::Notify;

#[derive(Default)]
pub struct Registry {
    clients: DashMap<u64, Arc<ClientEntry>>,
}

pub struct ClientEntry {
    pub id: u64,
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    created: Instant,
    /// Woken by CLIENT KILL: the session closes.
    pub kill: Notify,
    state: Mutex<ClientState>,
}

/// The first two arguments of a session's last request: two reference counts, no copy.
#[derive(Clone)]
pub struct LastCommand(Bytes, Option<Bytes>);

impl LastCommand {
    pub fn of(args: &[Bytes]) -> LastCommand {
        LastCommand(args[0].clone(), args.get(1).cloned())
    }

    /// The command name as Redis reports it: lower case, `container|sub` for subcommands.
    pub fn name(&self) -> String {
        let mut name = String::from_utf8_lossy(&self.0).to_ascii_lowercase();
        let container = crate::command::lookup(&self.0)
            .is_some_and(|spec| spec.has(crate::command::spec::flags::CONTAINER));
        if let (true, Some(sub)) = (container, &self.1) {
            name.push('|');
            name.push_str(&String::from_utf8_lossy(sub).to_ascii_lowercase());
        }
        name
    }
}

/// What a session reports about itself.
#[derive(Clone)]
pub struct ClientState {
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    pub resp: u8,
    /// The last command, spelled out only when CLIENT LIST asks.
    pub cmd: Option<LastCommand>,
    pub last_active: Instant,
    pub sub: usize,
    pub psub: usize,
    pub ssub: usize,
    /// Commands queued in MULTI, or -1 outside a transaction.
    pub multi: i64,
}

/// Removes the entry when the session ends, however it ends.
pub struct Registration {
    registry: Arc<Registry>,
    pub entry: Arc<ClientEntry>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.clients.remove(&self.entry.id);
    }
}

impl Registry {
    pub fn register(
        registry: &Arc<Registry>,
        id: u64,
        addr: SocketAddr,
        laddr: SocketAddr,
    ) -> Registration {
        let now = Instant::now();
        let entry = Arc::new(ClientEntry {
            id,
            addr,
            laddr,
            created: now,
            kill: Notify::new(),
            state: Mutex::new(ClientState {
                name: None,
                lib_name: None,
                lib_ver: None,
                resp: 2,
                cmd: None,
                last_active: now,
                sub: 0,
                psub: 0,
                ssub: 0,
                multi: -1,
            }),
        });
        registry.clients.insert(id, entry.clone());
        Registration {
            registry: registry.clone(),
            entry,
        }
    }

    pub fn get(&self, id: u64) -> Option<Arc<ClientEntry>> {
        self.clients.get(&id).map(|e| e.value().clone())
    }

    /// Every entry, by id.
    pub fn all(&self) -> Vec<Arc<ClientEntry>> {
        let mut all: Vec<Arc<ClientEntry>> =
            self.clients.iter().map(|e| e.value().clone()).collect();
        all.sort_by_key(|e| e.id);
        all
    }
}

impl ClientEntry {
    pub fn update(&self, f: impl FnOnce(&mut ClientState)) {
        if let Ok(mut state) = self.state.lock() {
            f(&mut state);
        }
    }

    pub fn state(&self) -> Option<ClientState> {
        self.state.lock().ok().map(|s| s.clone())
    }

    pub fn age_secs(&self) -> u64 {
        self.created.elapsed().as_secs()
    }

    pub fn is_pubsub(&self) -> bool {
        self.state().is_some_and(|s| s.sub + s.psub + s.ssub > 0)
    }

    /// One CLIENT LIST line, in Redis's `key=value` form, with the fields the proxy knows.
    pub fn line(&self) -> String {
        let Some(s) = self.state() else {
            return String::new();
        };
        let text = |b: &Option<Bytes>| {
            b.as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        let mut flags = String::new();
        if s.sub + s.psub + s.ssub > 0 {
            flags.push('P');
        }
        if s.multi >= 0 {
            flags.push('x');
        }
        if flags.is_empty() {
            flags.push('N');
        }
        let mut line = String::with_capacity(256);
        let _ = writeln!(
            line,
            "id={} addr={} laddr={} name={} age={} idle={} flags={flags} db=0 sub={} psub={} ssub={} multi={} cmd={} user=default lib-name={} lib-ver={} resp={}",
            self.id,
            self.addr,
            self.laddr,
            text(&s.name),
            self.age_secs(),
            s.last_active.elapsed().as_secs(),
            s.sub,
            s.psub,
            s.ssub,
            s.multi,
            s.cmd.as_ref().map_or_else(|| "NULL".to_string(), LastCommand::name),
            text(&s.lib_name),
            text(&s.lib_ver),
            s.resp,
        );
        line
    }
}
