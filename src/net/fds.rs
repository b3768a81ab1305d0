//! Opening descriptors on worker threads without taking the listener's spare.
//!
//! Out of file descriptors, the listener closes the spare one it keeps, accepts one waiting
//! client into the freed slot to tell it so, and opens the spare again. A socket opened on
//! another thread in between would take the freed slot, and the spare would be lost for good.
//! So every socket the workers open is opened under [`opening`], and the listener's swap runs
//! under [`swapping`], which waits for those in progress and holds new ones back for the few
//! system calls it takes. Only the opening itself is covered, never a wait for the network.

use std::io;
use std::net::SocketAddr;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::net::{TcpSocket, TcpStream};

static GATE: RwLock<()> = RwLock::new(());

/// Held while a worker opens a descriptor.
pub fn opening() -> RwLockReadGuard<'static, ()> {
    GATE.read().unwrap_or_else(|e| e.into_inner())
}

/// Held while the listener's spare is given up and taken back.
pub fn swapping() -> RwLockWriteGuard<'static, ()> {
    GATE.write().unwrap_or_else(|e| e.into_inner())
}

/// `TcpStream::connect` with the socket opened under [`opening`]: each address `addr` (`host:port`)
/// resolves to is tried in turn, and the last error is returned if none accepts.
pub async fn connect(addr: &str) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        match connect_to(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}

async fn connect_to(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = {
        let _open = opening();
        match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        }
    };
    socket.connect(addr).await
}
