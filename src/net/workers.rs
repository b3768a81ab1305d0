//! Worker threads: one single-threaded tokio runtime per thread, each running its own clients
//! and its own connections to every node, so a request never crosses a thread.
//!
//! The process starts its workers once ([`start`]); the thread that called it is worker 0 and
//! also runs the listener, the health checks and the HTTP port. Code on the data path asks
//! [`index`] which worker it runs on, and the backend pools keep one set of connections per
//! worker ([`count`] of them), each spawned on its own worker with [`spawn_on`].
//!
//! Without [`start`] (a proxy built inside another program, as some tests do) there is one
//! worker, the caller's runtime, and everything runs on it as before.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

/// The workers of this process, once started.
struct Registry {
    handles: Box<[Handle]>,
    /// Clients each worker serves now: a new client goes to the least loaded.
    clients: Box<[AtomicUsize]>,
}

static WORKERS: OnceLock<Registry> = OnceLock::new();

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// How many workers there are: one set of backend connections per worker.
pub fn count() -> usize {
    WORKERS.get().map_or(1, |w| w.handles.len())
}

/// The worker this thread is (0 outside any worker thread).
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Runs `task` on worker `worker`'s runtime (on the caller's when the workers are not started).
pub fn spawn_on<F>(worker: usize, task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match WORKERS.get().and_then(|w| w.handles.get(worker)) {
        Some(handle) => handle.spawn(task),
        None => tokio::spawn(task),
    }
}

/// The worker a new client goes to: the one serving the fewest clients now. The client is
/// counted there until the returned guard is dropped.
pub fn assign() -> Assigned {
    let Some(w) = WORKERS.get() else {
        return Assigned { worker: 0 };
    };
    let worker = (0..w.clients.len())
        .min_by_key(|&i| w.clients[i].load(Ordering::Relaxed))
        .unwrap_or(0);
    w.clients[worker].fetch_add(1, Ordering::Relaxed);
    Assigned { worker }
}

/// A client counted on its worker (see [`assign`]).
pub struct Assigned {
    pub worker: usize,
}

impl Drop for Assigned {
    fn drop(&mut self) {
        if let Some(w) = WORKERS.get() {
            w.clients[self.worker].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One `T` per worker, made on the worker's first use, for what every request adds to (its
/// command's counts, its node's): shared, every worker would write to the same cache lines as
/// it serves requests. A reader goes over all of them ([`PerWorker::all`]).
///
/// `T` should be aligned to a cache line or more (`#[repr(align(128))]`), so that no two
/// workers' values share one. Threads that are not workers use worker 0's; past
/// [`PER_WORKER_SLOTS`] workers, two share one (counters stay right, as atomics).
pub struct PerWorker<T> {
    slots: Box<[OnceLock<Box<T>>; PER_WORKER_SLOTS]>,
}

/// The workers [`PerWorker`] keeps a value apart for.
pub const PER_WORKER_SLOTS: usize = 64;

impl<T: Default> PerWorker<T> {
    /// The calling worker's.
    pub fn mine(&self) -> &T {
        self.slots[index() % PER_WORKER_SLOTS].get_or_init(Default::default)
    }

    /// Every worker's made so far.
    pub fn all(&self) -> impl Iterator<Item = &T> {
        self.slots
            .iter()
            .filter_map(|slot| slot.get().map(|b| &**b))
    }

    /// One counter of every worker's value, summed.
    pub fn sum(&self, counter: impl Fn(&T) -> &AtomicU64) -> u64 {
        self.all().map(|v| counter(v).load(Ordering::Relaxed)).sum()
    }
}

impl<T: Default> Default for PerWorker<T> {
    fn default() -> Self {
        PerWorker {
            slots: Box::new(std::array::from_fn(|_| OnceLock::new())),
        }
    }
}

impl<T> std::fmt::Debug for PerWorker<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let made = self.slots.iter().filter(|s| s.get().is_some()).count();
        write!(f, "PerWorker({made} made)")
    }
}

/// Makes the calling thread count as worker `index` for [`PerWorker`], in tests of what uses
/// it (the workers themselves start only once per process).
#[cfg(test)]
pub(crate) fn count_as(index: usize) {
    INDEX.with(|c| c.set(index));
}

/// The workers other than the calling thread's; stopped and joined on drop.
pub struct Threads {
    stop: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.stop.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// How many workers `configured` asks for: itself, or when 0 one per two CPUs this process may
/// use, and at least one.
///
/// Not one per CPU: a worker costs the least per request while it is kept busy, and on a machine
/// whose cores it shares (with Redis, with the clients, with the kernel's network stack, which
/// runs on the cores of the processes sending) a second worker mostly adds sleeps and wake-ups.
/// On two CPUs shared with three redis-servers and redis-benchmark, two workers took more CPU per
/// request than one and served fewer (README, "Worker threads").
pub fn wanted(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, |n| (usize::from(n) / 2).max(1)),
        n => n,
    }
}

/// Starts `workers` workers: builds the calling thread's runtime (worker 0, returned) and
/// `workers - 1` threads, each running a runtime of its own until [`Threads`] is dropped.
/// Fails when called twice in one process.
pub fn start(workers: usize) -> std::io::Result<(Runtime, Threads)> {
    let workers = workers.max(1);
    // `thread_name` names the runtime's blocking-pool threads (DNS lookups of node names).
    let runtime = || {
        Builder::new_current_thread()
            .enable_all()
            .thread_name("shardis-blocking")
            .build()
    };
    let own = runtime()?;
    let mut handles = vec![own.handle().clone()];
    let mut threads = Threads {
        stop: Vec::new(),
        threads: Vec::new(),
    };
    for i in 1..workers {
        let rt = runtime()?;
        handles.push(rt.handle().clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("shardis-{i}"))
            .spawn(move || {
                INDEX.with(|c| c.set(i));
                let _ = rt.block_on(stopped);
                rt.shutdown_timeout(std::time::Duration::from_secs(1));
            })?;
        threads.stop.push(stop);
        threads.threads.push(thread);
    }
    let registry = Registry {
        clients: handles.iter().map(|_| AtomicUsize::new(0)).collect(),
        handles: handles.into(),
    };
    if WORKERS.set(registry).is_err() {
        return Err(std::io::Error::other("the workers were already started"));
    }
    Ok((own, threads))
}
