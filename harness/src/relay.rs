//! A TCP relay that injects network faults between two endpoints.
//!
//! There is no `tc netem` on CI machines, so latency, partitions and resets
//! are simulated in user space: put a [`FaultRelay`] between Meridian and a
//! PostgreSQL server (or between two Meridian nodes), point the client at
//! [`FaultRelay::local_addr`], and change faults through a [`FaultControl`]
//! at any time from any thread.
//!
//! Each accepted connection gets its own upstream connection and a task
//! owned by the relay. Each direction is a delay line: a reader stamps every
//! chunk with "deliver at now + delay" and queues it, a writer waits for that
//! instant and writes. Latency therefore does not throttle throughput, and
//! order is kept even when the delay changes.
//!
//! ```text
//!   client ──▶ read ─▶ [chunk, due] queue ─▶ sleep_until(due) ─▶ write ──▶ target
//!   client ◀── write ◀─ sleep_until(due) ◀─ queue ◀─ [chunk, due] ◀─ read ◀── target
//! ```
//!
//! A blackhole stalls both directions: the relay stops reading and writing,
//! bytes wait in kernel buffers and in the queue, and senders eventually
//! block, as during a real partition while TCP keeps retransmitting. After
//! [`FaultControl::heal`] the streams resume intact, which keeps protocol
//! streams parseable; bytes are never dropped out of the middle of a stream.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{IoContext, Result};

/// Largest chunk read at once.
const CHUNK: usize = 16 * 1024;

/// Chunks queued per direction; bounds the relay's memory (4 MiB) and, with
/// the delay, its throughput (a bandwidth-delay product, as on a real link).
const QUEUED_CHUNKS: usize = 256;

/// How long connecting to the target may take before the client is reset.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The faults in force. All off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Added one-way latency for every chunk in each direction.
    pub delay: Duration,
    /// Stall all traffic; new connections are accepted but hang.
    pub blackhole: bool,
    /// Refuse new connections (the listening socket is closed).
    pub refuse: bool,
}

/// A running relay. Dropping it (or [`shutdown`](Self::shutdown)) stops
/// accepting and resets every relayed connection.
#[derive(Debug)]
pub struct FaultRelay {
    local_addr: SocketAddr,
    target: SocketAddr,
    control: FaultControl,
    /// Cancels the accept loop and every connection.
    cancel: CancellationToken,
    /// Owns the accept loop and the connection tasks.
    tasks: TaskTracker,
}

/// A cheap, cloneable handle to change a relay's faults. Outliving the
/// relay is harmless; changes then have no effect.
#[derive(Debug, Clone)]
pub struct FaultControl {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    faults: watch::Sender<Faults>,
    /// Every connection watches the token current when it was accepted;
    /// `reset_all` cancels it and installs a fresh child of `root`.
    epoch: Mutex<CancellationToken>,
    root: CancellationToken,
    active: AtomicUsize,
    accepted: AtomicU64,
}

impl FaultRelay {
    /// Listens on `127.0.0.1:0` and relays every accepted connection to
    /// `target`. Must be called within a Tokio runtime, which runs the
    /// relay's tasks.
    pub async fn start(target: SocketAddr) -> Result<FaultRelay> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .io_context(|| "binding the fault relay on 127.0.0.1:0".into())?;
        let local_addr = listener.local_addr().io_context(|| "reading the fault relay's address".into())?;
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            faults: watch::Sender::new(Faults::default()),
            epoch: Mutex::new(cancel.child_token()),
            root: cancel.clone(),
            active: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
        });
        let tasks = TaskTracker::new();
        tasks.spawn(accept_connections(listener, local_addr, target, shared.clone(), tasks.clone()));
        tracing::debug!(%local_addr, %target, "fault relay started");
        Ok(FaultRelay { local_addr, target, control: FaultControl { shared }, cancel, tasks })
    }

    /// Where clients should connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where connections are relayed to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// A handle for changing faults from elsewhere.
    pub fn control(&self) -> FaultControl {
        self.control.clone()
    }

    /// See [`FaultControl::set_delay`].
    pub fn set_delay(&self, delay: Duration) {
        self.control.set_delay(delay);
    }

    /// See [`FaultControl::blackhole`].
    pub fn blackhole(&self, on: bool) {
        self.control.blackhole(on);
    }

    /// See [`FaultControl::set_refuse`].
    pub fn set_refuse(&self, on: bool) {
        self.control.set_refuse(on);
    }

    /// See [`FaultControl::reset_all`].
    pub fn reset_all(&self) {
        self.control.reset_all();
    }

    /// See [`FaultControl::heal`].
    pub fn heal(&self) {
        self.control.heal();
    }

    /// Stops accepting, resets every connection and waits for all the
    /// relay's tasks to finish.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for FaultRelay {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.tasks.close();
    }
}

impl FaultControl {
    /// Sets the one-way latency added to every chunk in each direction
    /// (a round trip gains twice this). Applies to chunks read from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.faults.send_modify(|f| f.delay = delay);
    }

    /// Starts or ends a blackhole: no bytes move in either direction and new
    /// connections are accepted but hang. Nothing is lost; traffic resumes
    /// when it ends.
    pub fn blackhole(&self, on: bool) {
        self.shared.faults.send_modify(|f| f.blackhole = on);
    }

    /// Starts or ends refusing new connections. The relay closes its
    /// listening socket, so connects fail with "connection refused";
    /// existing connections are untouched. A connect racing with the switch
    /// may be accepted and then reset instead.
    pub fn set_refuse(&self, on: bool) {
        self.shared.faults.send_modify(|f| f.refuse = on);
    }

    /// Closes every current connection abruptly: both the client and the
    /// target side get a TCP RST. New connections are unaffected.
    pub fn reset_all(&self) {
        let mut epoch = self.shared.epoch.lock();
        epoch.cancel();
        *epoch = self.shared.root.child_token();
    }

    /// Clears every fault (delay, blackhole, refuse). Connections that were
    /// reset stay closed.
    pub fn heal(&self) {
        self.shared.faults.send_replace(Faults::default());
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        *self.shared.faults.borrow()
    }

    /// Connections being relayed right now.
    pub fn active_connections(&self) -> usize {
        self.shared.active.load(Ordering::Relaxed)
    }

    /// Connections accepted since the relay started.
    pub fn accepted_connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }
}

/// The relay's accept loop. While refusing, the listener is closed so the
/// kernel refuses connects; it is bound again on the same address after.
async fn accept_connections(
    listener: TcpListener,
    local_addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    tasks: TaskTracker,
) {
    let cancel = shared.root.clone();
    let mut faults = shared.faults.subscribe();
    let mut listener = Some(listener);
    loop {
        let refuse = faults.borrow_and_update().refuse;
        if refuse {
            listener = None;
        } else if listener.is_none() {
            match TcpListener::bind(local_addr).await {
                Ok(bound) => listener = Some(bound),
                Err(e) => {
                    tracing::warn!(%local_addr, error = %e, "fault relay cannot listen again, retrying");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    }
                }
            }
        }
        // All branches below are cancel safe: `cancelled`, `changed` and
        // `TcpListener::accept` lose nothing when another branch wins.
        let Some(bound) = &listener else {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = faults.changed() => continue,
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = faults.changed() => {}
            accepted = bound.accept() => match accepted {
                Ok((client, peer)) => {
                    if shared.faults.borrow().refuse {
                        abort(client);
                        continue;
                    }
                    shared.accepted.fetch_add(1, Ordering::Relaxed);
                    let reset = shared.epoch.lock().clone();
                    tracing::debug!(%peer, %target, "fault relay accepted");
                    tasks.spawn(relay_connection(client, target, shared.clone(), reset));
                }
                Err(e) => {
                    // Typically EMFILE; back off instead of spinning.
                    tracing::warn!(%local_addr, error = %e, "fault relay accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// Counts a connection as active for as long as it lives.
struct ActiveGuard<'a>(&'a AtomicUsize);

impl<'a> ActiveGuard<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Relays one client connection until both sides close, either side
/// fails, or `reset` fires (reset_all or relay shutdown).
async fn relay_connection(mut client: TcpStream, target: SocketAddr, shared: Arc<Shared>, reset: CancellationToken) {
    let _active = ActiveGuard::new(&shared.active);
    let mut faults = shared.faults.subscribe();
    let connect = async {
        // A new connection hangs while blackholed: no upstream yet.
        let _ = faults.wait_for(|f| !f.blackhole).await;
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
    };
    let upstream = tokio::select! {
        () = reset.cancelled() => None,
        connected = connect => match connected {
            Ok(Ok(upstream)) => Some(upstream),
            Ok(Err(e)) => {
                tracing::debug!(%target, error = %e, "fault relay cannot reach target");
                None
            }
            Err(_) => None,
        },
    };
    let Some(mut upstream) = upstream else {
        abort(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);

    let clean = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let both = async {
            tokio::try_join!(
                pump(client_read, upstream_write, shared.faults.subscribe()),
                pump(upstream_read, client_write, shared.faults.subscribe()),
            )
        };
        // On reset the pumps are dropped mid-flight on purpose.
        tokio::select! {
            () = reset.cancelled() => false,
            result = both => result.is_ok(),
        }
    };
    if !clean {
        abort(client);
        abort(upstream);
    }
}

/// One chunk in a delay line; an empty chunk stands for end of stream.
struct Chunk {
    due: Instant,
    data: Vec<u8>,
}

/// Moves bytes from `from` to `to` through a delay line, honouring the
/// blackhole. Ends after forwarding end-of-stream as a half close; fails on
/// the first I/O error (the caller then resets both sides).
async fn pump(mut from: ReadHalf<'_>, mut to: WriteHalf<'_>, faults: watch::Receiver<Faults>) -> io::Result<()> {
    let (queue, mut due) = mpsc::channel::<Chunk>(QUEUED_CHUNKS);
    let mut read_faults = faults.clone();
    let mut write_faults = faults;
    let reader = async move {
        let mut buf = vec![0; CHUNK];
        loop {
            let _ = read_faults.wait_for(|f| !f.blackhole).await;
            let n = from.read(&mut buf).await?;
            let delay = read_faults.borrow().delay;
            let chunk = Chunk { due: Instant::now() + delay, data: buf[..n].to_vec() };
            if queue.send(chunk).await.is_err() || n == 0 {
                return Ok::<(), io::Error>(());
            }
        }
    };
    let writer = async move {
        while let Some(chunk) = due.recv().await {
            tokio::time::sleep_until(chunk.due).await;
            let _ = write_faults.wait_for(|f| !f.blackhole).await;
            if chunk.data.is_empty() {
                to.shutdown().await?;
                break;
            }
            to.write_all(&chunk.data).await?;
        }
        Ok::<(), io::Error>(())
    };
    tokio::try_join!(reader, writer).map(|_| ())
}

/// Closes `stream` with a TCP RST instead of a FIN.
fn abort(stream: TcpStream) {
    // SO_LINGER 0 makes close() send RST and never blocks.
    let _ = stream.set_zero_linger();
    drop(stream);
}
