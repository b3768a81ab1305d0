//! The registry of the proxy's own clients, which CLIENT LIST, CLIENT INFO, CLIENT KILL and
//! INFO read (their lines are written by the session's `local::client_list`).
//!
//! Each session registers an entry for its lifetime and refreshes what it reports once per
//! batch of commands (not per command), so the registry costs the hot path one uncontended
//! lock per read from the socket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::task::AtomicWaker;

#[derive(Default)]
pub struct Registry {
    clients: DashMap<u64, Arc<ClientEntry>>,
}

pub struct ClientEntry {
    pub id: u64,
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    /// The client socket's file descriptor.
    pub fd: i32,
    created: Instant,
    /// Set by CLIENT KILL: the session closes.
    pub killed: AtomicBool,
    /// Wakes the session to look at its signals: CLIENT KILL, shutdown, a reload.
    pub signal: AtomicWaker,
    state: Mutex<ClientState>,
}

impl ClientEntry {
    /// CLIENT KILL: its session closes.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.signal.wake();
    }
}

/// The first two arguments of a session's last request, copied (up to [`Word::MAX`] bytes
/// each, without allocating), and the bytes all its arguments take. Copied rather than
/// shared: a reference to an argument would keep the whole read buffer it came in alive, a
/// 200 MiB one after a big SET, until the client's next command.
#[derive(Clone)]
pub struct LastCommand(Word, Option<Word>, usize);

/// The start of an argument, in place.
#[derive(Clone, Copy)]
struct Word {
    bytes: [u8; Word::MAX],
    len: u8,
}

impl Word {
    /// Longer than any command or subcommand name.
    const MAX: usize = 32;

    fn of(arg: &[u8]) -> Word {
        let len = arg.len().min(Word::MAX);
        let mut bytes = [0; Word::MAX];
        bytes[..len].copy_from_slice(&arg[..len]);
        Word {
            bytes,
            len: len as u8,
        }
    }
}

impl std::ops::Deref for Word {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl LastCommand {
    pub fn of(args: &[Bytes]) -> LastCommand {
        let size = args.iter().map(Bytes::len).sum();
        LastCommand(Word::of(&args[0]), args.get(1).map(|a| Word::of(a)), size)
    }

    /// The bytes all the request's arguments took.
    pub fn argv_mem(&self) -> usize {
        self.2
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
    /// The user it authenticated as (`default` without `[[users]]`).
    pub user: String,
    /// The last command, spelled out only when CLIENT LIST asks.
    pub cmd: Option<LastCommand>,
    pub last_active: Instant,
    pub sub: usize,
    pub psub: usize,
    pub ssub: usize,
    /// Commands queued in MULTI, or -1 outside a transaction.
    pub multi: i64,
    /// Its buffers, as of the last batch of commands it sent.
    pub io: Buffers,
    /// The longest its input buffer has been.
    pub qbuf_peak: usize,
}

/// A session's buffers, as CLIENT LIST reports them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Buffers {
    /// Bytes read and not yet parsed, and the room left in that buffer.
    pub qbuf: usize,
    pub qbuf_free: usize,
    /// Bytes of queued MULTI commands.
    pub multi_mem: usize,
    /// Reply bytes waiting to be written, and the buffer's size.
    pub obl: usize,
    pub out_capacity: usize,
    /// Replies owed (answered or not), and the bytes of those answered but not yet written.
    pub oll: usize,
    pub omem: usize,
    /// Whether the session waits to write to the socket as well as to read from it.
    pub writing: bool,
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
        fd: i32,
    ) -> Registration {
        let now = Instant::now();
        let entry = Arc::new(ClientEntry {
            id,
            addr,
            laddr,
            fd,
            created: now,
            killed: AtomicBool::new(false),
            signal: AtomicWaker::new(),
            state: Mutex::new(ClientState {
                name: None,
                lib_name: None,
                lib_ver: None,
                resp: 2,
                user: "default".into(),
                cmd: None,
                last_active: now,
                sub: 0,
                psub: 0,
                ssub: 0,
                multi: -1,
                io: Buffers::default(),
                qbuf_peak: 0,
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

    /// The largest input and output buffers of any client now (INFO's
    /// `client_recent_max_input_buffer` and `client_recent_max_output_buffer`).
    pub fn recent_max_buffers(&self) -> (usize, usize) {
        self.clients
            .iter()
            .filter_map(|e| e.value().state())
            .fold((0, 0), |(i, o), s| {
                (
                    i.max(s.io.qbuf + s.io.qbuf_free),
                    o.max(s.io.obl + s.io.omem),
                )
            })
    }

    /// Wakes every session to look at its signals, after shutdown or a reload was signalled.
    pub fn wake_all(&self) {
        for entry in self.clients.iter() {
            entry.value().signal.wake();
        }
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
}
