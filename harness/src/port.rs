//! Choosing TCP ports at run time.
//!
//! Fixed ports collide with whatever else runs on the machine and with tests
//! running in parallel. We pick a random port *below* the kernel's ephemeral
//! range (`net.ipv4.ip_local_port_range`), check that it can be bound, and
//! release it for the server to bind. Ports from the ephemeral range (what
//! binding `127.0.0.1:0` gives) are also what the kernel hands to outgoing
//! connections, so between our check and the server's bind a client socket
//! of any process could take it ("address already in use" in CI); below the
//! range only a process that binds that very port can. Within this process
//! we remember what we handed out so two parallel tests never get the same
//! port.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::LazyLock;

use parking_lot::Mutex;

use crate::error::{IoContext, Result};

/// Ports this process has already handed out.
static HANDED_OUT: LazyLock<Mutex<HashSet<u16>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

/// Lowest port we hand out: clear of the well-known and common service ports.
const LOWEST: u16 = 15_000;

/// Returns a TCP port on 127.0.0.1 that was free a moment ago, lies below
/// the ephemeral range, and that this process has not handed out before.
pub fn free_port() -> Result<u16> {
    let highest = ephemeral_low().saturating_sub(1).max(LOWEST + 1_000);
    let span = u64::from(highest - LOWEST) + 1;
    for attempt in 0..10_000u64 {
        let port = LOWEST + (random(attempt) % span) as u16;
        if HANDED_OUT.lock().contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() && HANDED_OUT.lock().insert(port) {
            return Ok(port);
        }
    }
    // Everything below the ephemeral range is taken: let the kernel choose.
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .io_context(|| "binding 127.0.0.1:0 to find a free port".into())?;
        let port = listener.local_addr().io_context(|| "reading the address of a probe listener".into())?.port();
        if HANDED_OUT.lock().insert(port) {
            return Ok(port);
        }
    }
}

/// The first port of the kernel's ephemeral range (32768 when unknown).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|low| low.parse().ok()))
        .unwrap_or(32_768)
}

/// A random number: std's per-process random hash keys, the clock and a
/// counter, so parallel test processes pick different ports.
fn random(attempt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(attempt);
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish()
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
        assert!(ports.iter().all(|&p| p >= LOWEST && p < ephemeral_low()), "{ports:?}");
    }
}
