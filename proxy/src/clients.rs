//! Every client session of the node, for the admin console's `SHOW CLIENTS`
//! (and the client counts of `SHOW STATS` / `SHOW SERVERS`).
//!
//! The handshake registers a client once it has logged in and keeps the
//! returned [`ClientGuard`] for as long as the session runs; dropping the
//! guard removes the entry. The session reports what it is doing through
//! its [`ClientEntry`] ([`ClientEntry::observe`], [`ClientEntry::set_attached`]):
//! an atomic store, or a short lock that allocates only when the attached
//! server changes. Nothing here is on the path of a statement otherwise, and
//! nothing waits on the admin console.
//!
//! ```text
//!   handshake ──register──▶ Clients ◀──list── admin console
//!       │                     ▲
//!       └── ClientGuard ──────┘ drop: deregister
//!   session ──observe / set_attached──▶ ClientEntry (atomics, tiny lock)
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};

/// How a client is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMode {
    /// Transaction pooling.
    Transaction,
    /// Session pooling.
    Session,
    /// The admin console (database `meridian`).
    Admin,
}

impl ClientMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientMode::Transaction => "transaction",
            ClientMode::Session => "session",
            ClientMode::Admin => "admin",
        }
    }
}

/// What a client is doing, as its session last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Between transactions, waiting for the client.
    Idle = 0,
    /// A request is being served.
    Active = 1,
    /// Inside a transaction block, waiting for the client.
    InTransaction = 2,
    /// Inside a failed transaction block, waiting for ROLLBACK.
    FailedTransaction = 3,
}

impl ClientState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Active => "active",
            ClientState::InTransaction => "in transaction",
            ClientState::FailedTransaction => "in transaction (aborted)",
        }
    }

    fn from_u8(v: u8) -> ClientState {
        match v {
            1 => ClientState::Active,
            2 => ClientState::InTransaction,
            3 => ClientState::FailedTransaction,
            _ => ClientState::Idle,
        }
    }

    /// The state a ReadyForQuery status byte (`I`, `T`, `E`) stands for.
    pub fn from_tx_status(status: u8) -> ClientState {
        match status {
            b'T' => ClientState::InTransaction,
            b'E' => ClientState::FailedTransaction,
            _ => ClientState::Idle,
        }
    }
}

/// What is known about a client when it logs in; never changes after.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The session id (also in the tracing span).
    pub id: u64,
    pub user: String,
    pub database: String,
    /// The client's address, when the socket could tell.
    pub peer: Option<SocketAddr>,
    pub tls: bool,
    pub mode: ClientMode,
}

/// One client session.
#[derive(Debug)]
pub struct ClientEntry {
    pub info: ClientInfo,
    pub connected_at: SystemTime,
    state: AtomicU8,
    attached: AtomicBool,
    /// The server (node name) last attached; meaningful while `attached`.
    /// Kept after a detach so that re-attaching to the same server, the
    /// common case, allocates nothing.
    server: Mutex<Option<Arc<str>>>,
}

impl ClientEntry {
    fn new(info: ClientInfo) -> ClientEntry {
        ClientEntry {
            info,
            connected_at: SystemTime::now(),
            state: AtomicU8::new(ClientState::Idle as u8),
            attached: AtomicBool::new(false),
            server: Mutex::new(None),
        }
    }

    pub fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, state: ClientState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Report the session's state where it is about to wait: `busy` while a
    /// request is in flight (answers owed), else from the transaction
    /// status of the last ReadyForQuery.
    pub fn observe(&self, busy: bool, tx_status: u8) {
        let s = if busy { ClientState::Active } else { ClientState::from_tx_status(tx_status) };
        self.set_state(s);
    }

    /// The server connection now serving the client: a topology node name
    /// (or the server address when no node has it), or `None` once it went
    /// back to its pool.
    pub fn set_attached(&self, server: Option<&str>) {
        match server {
            None => self.attached.store(false, Ordering::Relaxed),
            Some(name) => {
                let mut s = self.server.lock();
                if s.as_deref() != Some(name) {
                    *s = Some(Arc::from(name));
                }
                drop(s);
                self.attached.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The server serving the client now, if any.
    pub fn attached(&self) -> Option<Arc<str>> {
        if !self.attached.load(Ordering::Relaxed) {
            return None;
        }
        self.server.lock().clone()
    }
}

/// Every client of the node, by session id.
#[derive(Debug, Default)]
pub struct Clients {
    map: RwLock<BTreeMap<u64, Arc<ClientEntry>>>,
}

impl Clients {
    /// Add a logged-in client; it stays listed until the guard is dropped.
    pub fn register(self: &Arc<Self>, info: ClientInfo) -> ClientGuard {
        let entry = Arc::new(ClientEntry::new(info));
        self.map.write().insert(entry.info.id, entry.clone());
        ClientGuard { clients: self.clone(), entry }
    }

    /// The entry of session `id`, while it runs.
    pub fn get(&self, id: u64) -> Option<Arc<ClientEntry>> {
        self.map.read().get(&id).cloned()
    }

    /// Every client, by session id.
    pub fn list(&self) -> Vec<Arc<ClientEntry>> {
        self.map.read().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }
}

/// A client's registration: removes the entry when dropped (the session
/// ended, however it ended).
#[derive(Debug)]
pub struct ClientGuard {
    clients: Arc<Clients>,
    entry: Arc<ClientEntry>,
}

impl ClientGuard {
    pub fn entry(&self) -> &Arc<ClientEntry> {
        &self.entry
    }
}

impl std::ops::Deref for ClientGuard {
    type Target = ClientEntry;

    fn deref(&self) -> &ClientEntry {
        &self.entry
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.clients.map.write().remove(&self.entry.info.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64) -> ClientInfo {
        ClientInfo {
            id,
            user: "app".into(),
            database: "db".into(),
            peer: None,
            tls: false,
            mode: ClientMode::Transaction,
        }
    }

    #[test]
    fn registered_until_the_guard_drops() {
        let clients = Arc::new(Clients::default());
        let a = clients.register(info(1));
        let b = clients.register(info(2));
        assert_eq!(clients.list().iter().map(|c| c.info.id).collect::<Vec<_>>(), [1, 2]);
        drop(a);
        assert_eq!(clients.len(), 1);
        assert!(clients.get(1).is_none());
        assert_eq!(clients.get(2).map(|c| c.info.id), Some(2));
        drop(b);
        assert!(clients.is_empty());
    }

    #[test]
    fn state_and_attachment() {
        let clients = Arc::new(Clients::default());
        let c = clients.register(info(7));
        assert_eq!(c.state(), ClientState::Idle);
        assert_eq!(c.attached(), None);
        c.observe(true, b'I');
        assert_eq!(c.state(), ClientState::Active);
        c.observe(false, b'T');
        assert_eq!(c.state(), ClientState::InTransaction);
        c.observe(false, b'E');
        assert_eq!(c.state().as_str(), "in transaction (aborted)");
        c.set_attached(Some("pg-1"));
        assert_eq!(c.attached().as_deref(), Some("pg-1"));
        let first = c.server.lock().clone();
        c.set_attached(None);
        assert_eq!(c.attached(), None);
        c.set_attached(Some("pg-1"));
        // Same server again: the name is not allocated anew.
        assert!(Arc::ptr_eq(first.as_ref().unwrap(), c.server.lock().as_ref().unwrap()));
        c.set_attached(Some("pg-2"));
        assert_eq!(clients.get(7).and_then(|e| e.attached()).as_deref(), Some("pg-2"));
    }
}
