//! Query cancellation. Each client gets Meridian's own (pid, key) in
//! BackendKeyData; a CancelRequest carrying them is forwarded to whichever
//! server connection serves that client at that moment, with that server's
//! own (pid, key). A cancel that arrives while the client holds no server
//! connection has nothing to cancel and is dropped, as PostgreSQL would.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;
use tokio::io::AsyncWriteExt;

use crate::backend::ServerAddr;
use crate::wire::messages::cancel_request;

/// Where a cancel for a client goes right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelTarget {
    pub addr: Arc<ServerAddr>,
    pub pid: i32,
    pub key: i32,
}

#[derive(Debug)]
struct Slot {
    key: i32,
    target: Mutex<Option<CancelTarget>>,
}

/// All clients' cancel keys on this node.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    slots: Mutex<HashMap<i32, Arc<Slot>>>,
}

/// A client's registration; unregisters on drop.
#[derive(Debug)]
pub struct CancelHandle {
    registry: Arc<CancelRegistry>,
    slot: Arc<Slot>,
    pub pid: i32,
}

impl CancelHandle {
    pub fn key(&self) -> i32 {
        self.slot.key
    }

    /// Point cancels at `target` (a server connection was attached) or
    /// nowhere (it was released).
    pub fn set_target(&self, target: Option<CancelTarget>) {
        *self.slot.target.lock() = target;
    }
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        self.registry.slots.lock().remove(&self.pid);
    }
}

impl CancelRegistry {
    /// Register a new client and give it a fresh (pid, key).
    pub fn register(self: &Arc<Self>) -> CancelHandle {
        let mut rng = rand::thread_rng();
        let key: i32 = rng.r#gen();
        let slot = Arc::new(Slot { key, target: Mutex::new(None) });
        let mut slots = self.slots.lock();
        let pid = loop {
            let pid = rng.gen_range(1..i32::MAX);
            if !slots.contains_key(&pid) {
                break pid;
            }
        };
        slots.insert(pid, slot.clone());
        CancelHandle { registry: self.clone(), slot, pid }
    }

    /// The target for a cancel request, if the key matches and the client is
    /// running something.
    pub fn target(&self, pid: i32, key: i32) -> Option<CancelTarget> {
        let slot = self.slots.lock().get(&pid).cloned()?;
        if slot.key != key {
            return None;
        }
        slot.target.lock().clone()
    }
}

/// Send a CancelRequest to a server.
pub async fn forward(target: &CancelTarget) -> std::io::Result<()> {
    let send = async {
        let mut s = target.addr.connect().await?;
        s.write_all(&cancel_request(target.pid, target.key)).await?;
        s.shutdown().await
    };
    tokio::time::timeout(Duration::from_secs(5), send)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "cancel request timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_match_and_target_follows_the_client() {
        let reg = Arc::new(CancelRegistry::default());
        let h = reg.register();
        assert_eq!(reg.target(h.pid, h.key()), None);
        let addr = Arc::new(ServerAddr::parse("127.0.0.1:5432").unwrap());
        let t = CancelTarget { addr, pid: 42, key: 7 };
        h.set_target(Some(t.clone()));
        assert_eq!(reg.target(h.pid, h.key()), Some(t));
        assert_eq!(reg.target(h.pid, h.key().wrapping_add(1)), None);
        h.set_target(None);
        assert_eq!(reg.target(h.pid, h.key()), None);
        let pid = h.pid;
        drop(h);
        assert!(reg.slots.lock().get(&pid).is_none());
    }
}
