//! Choosing TCP ports at run time.
//!
//! Fixed ports collide with whatever else runs on the machine and with tests
//! running in parallel. We let the kernel pick an unused port by binding
//! `127.0.0.1:0`, then release it for the server to bind. Another process
//! can grab it in between, so callers retry on "address in use"; within this
//! process we remember what we handed out so two parallel tests never get the
//! same port.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::LazyLock;

use parking_lot::Mutex;

use crate::error::{IoContext, Result};

/// Ports this process has already handed out.
static HANDED_OUT: LazyLock<Mutex<HashSet<u16>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

/// Returns a TCP port on 127.0.0.1 that was free a moment ago and that this
/// process has not handed out before.
pub fn free_port() -> Result<u16> {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .io_context(|| "binding 127.0.0.1:0 to find a free port".into())?;
        let port = listener.local_addr().io_context(|| "reading the address of a probe listener".into())?.port();
        if HANDED_OUT.lock().insert(port) {
            return Ok(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let ports: Vec<u16> = (0..20).map(|_| free_port().unwrap()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        TcpListener::bind((Ipv4Addr::LOCALHOST, ports[0])).unwrap();
    }
}
