//! The fault relay against a plain TCP echo target.

// Helpers outside #[test] fns panic on failure too; that is the report.
#![allow(clippy::unwrap_used)]

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use harness::{FaultRelay, Faults};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

/// An echo server. Each accepted connection is also reported on the
/// returned channel (as a peer address) so tests can count upstream
/// connections.
async fn echo_target() -> (SocketAddr, mpsc::UnboundedReceiver<SocketAddr>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            let _ = tx.send(peer);
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            });
        }
    });
    (addr, rx)
}

/// A target that hands accepted streams to the test untouched.
async fn holding_target() -> (SocketAddr, mpsc::UnboundedReceiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = tx.send(stream);
        }
    });
    (addr, rx)
}

async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).await.unwrap();
    let mut back = vec![0; message.len()];
    stream.read_exact(&mut back).await.unwrap();
    back
}

#[tokio::test]
async fn bytes_pass_both_ways_and_half_close_propagates() {
    let (target, _) = echo_target().await;
    let relay = FaultRelay::start(target).await.unwrap();
    assert_eq!(relay.target(), target);
    let mut stream = TcpStream::connect(relay.local_addr()).await.unwrap();
    assert_eq!(round_trip(&mut stream, b"hello").await, b"hello");

    // A megabyte in one go, then a half close: everything comes back in
    // order, followed by end of stream.
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let (mut read, mut write) = stream.into_split();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    read.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    assert_eq!(back.len(), payload.len());
    assert!(back == payload);
    assert_eq!(relay.control().accepted_connections(), 1);
    relay.shutdown().await;
}

#[tokio::test]
async fn delay_adds_latency_without_throttling() {
    let (target, _) = echo_target().await;
    let relay = FaultRelay::start(target).await.unwrap();
    let mut stream = TcpStream::connect(relay.local_addr()).await.unwrap();
    round_trip(&mut stream, b"warm up").await;

    let delay = Duration::from_millis(100);
    // Changed from another thread through a cloned handle.
    let control = relay.control();
    std::thread::spawn(move || control.set_delay(delay)).join().unwrap();
    assert_eq!(relay.control().faults().delay, delay);

    let started = Instant::now();
    round_trip(&mut stream, b"ping").await;
    let rtt = started.elapsed();
    assert!(rtt >= 2 * delay, "round trip {rtt:?} is shorter than two delays");

    // Twenty pipelined messages share the latency instead of queueing
    // behind each other's delay: a delay line, not a sleep per write.
    let started = Instant::now();
    for i in 0..20u8 {
        stream.write_all(&[i; 100]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut back = vec![0; 2000];
    stream.read_exact(&mut back).await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= 2 * delay, "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(900), "delay throttled throughput: {elapsed:?}");
    assert!(back.chunks(100).enumerate().all(|(i, c)| c.iter().all(|b| usize::from(*b) == i)));

    relay.heal();
    assert_eq!(relay.control().faults(), Faults::default());
    let started = Instant::now();
    round_trip(&mut stream, b"fast again").await;
    assert!(started.elapsed() < delay);
}

#[tokio::test]
async fn blackhole_stalls_traffic_and_new_connections_until_healed() {
    let (target, mut upstreams) = echo_target().await;
    let relay = FaultRelay::start(target).await.unwrap();
    let mut old = TcpStream::connect(relay.local_addr()).await.unwrap();
    round_trip(&mut old, b"before").await;
    upstreams.recv().await.unwrap();

    relay.blackhole(true);
    old.write_all(b"lost?").await.unwrap();
    let mut buf = [0; 5];
    assert!(timeout(Duration::from_millis(300), old.read_exact(&mut buf)).await.is_err(), "bytes crossed a blackhole");

    // A new connection is accepted by the kernel but goes nowhere.
    let mut new = TcpStream::connect(relay.local_addr()).await.unwrap();
    new.write_all(b"hello").await.unwrap();
    let mut hello = [0; 5];
    assert!(timeout(Duration::from_millis(300), new.read_exact(&mut hello)).await.is_err());
    assert!(upstreams.try_recv().is_err(), "the relay connected upstream during a blackhole");

    // Healing delivers what was held back, intact and in order.
    relay.heal();
    timeout(Duration::from_secs(5), old.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"lost?");
    timeout(Duration::from_secs(5), new.read_exact(&mut hello)).await.unwrap().unwrap();
    assert_eq!(&hello, b"hello");
    assert_eq!(round_trip(&mut old, b"after").await, b"after");
}

#[tokio::test]
async fn reset_all_aborts_both_sides_of_every_connection() {
    let (target, mut upstreams) = holding_target().await;
    let relay = FaultRelay::start(target).await.unwrap();
    let mut client = TcpStream::connect(relay.local_addr()).await.unwrap();
    client.write_all(b"hi").await.unwrap();
    let mut upstream = upstreams.recv().await.unwrap();
    let mut buf = [0; 2];
    upstream.read_exact(&mut buf).await.unwrap();
    assert_eq!(relay.control().active_connections(), 1);

    relay.reset_all();
    let mut rest = Vec::new();
    let client_side = timeout(Duration::from_secs(5), client.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(client_side.unwrap_err().kind(), ErrorKind::ConnectionReset);
    let upstream_side = timeout(Duration::from_secs(5), upstream.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(upstream_side.unwrap_err().kind(), ErrorKind::ConnectionReset);

    // New connections are unaffected.
    let mut again = TcpStream::connect(relay.local_addr()).await.unwrap();
    again.write_all(b"ok").await.unwrap();
    let mut upstream = upstreams.recv().await.unwrap();
    upstream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ok");
    let deadline = Instant::now() + Duration::from_secs(2);
    while relay.control().active_connections() != 1 {
        assert!(Instant::now() < deadline, "reset connections still counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn refuse_rejects_new_connections_but_keeps_old_ones() {
    let (target, _) = echo_target().await;
    let relay = FaultRelay::start(target).await.unwrap();
    let mut old = TcpStream::connect(relay.local_addr()).await.unwrap();
    round_trip(&mut old, b"before").await;

    relay.set_refuse(true);
    // The listener closes asynchronously; a connect racing with it may be
    // accepted and then reset, so poll for a plain refusal.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match TcpStream::connect(relay.local_addr()).await {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
            other => {
                assert!(Instant::now() < deadline, "still accepting: {other:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    assert_eq!(round_trip(&mut old, b"still up").await, b"still up");

    relay.heal();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut new = loop {
        match TcpStream::connect(relay.local_addr()).await {
            Ok(stream) => break stream,
            Err(e) => {
                assert!(Instant::now() < deadline, "not listening again: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert_eq!(round_trip(&mut new, b"welcome back").await, b"welcome back");
}

#[tokio::test]
async fn shutdown_resets_connections_and_stops_listening() {
    let (target, _) = echo_target().await;
    let relay = FaultRelay::start(target).await.unwrap();
    let addr = relay.local_addr();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut stream, b"x").await;
    let control = relay.control();

    timeout(Duration::from_secs(5), relay.shutdown()).await.unwrap();
    let mut rest = Vec::new();
    assert!(stream.read_to_end(&mut rest).await.is_err());
    assert_eq!(TcpStream::connect(addr).await.unwrap_err().kind(), ErrorKind::ConnectionRefused);
    // A handle that outlives its relay is harmless.
    control.set_delay(Duration::from_secs(1));
    control.reset_all();
    assert_eq!(control.active_connections(), 0);
}

#[tokio::test]
async fn an_unreachable_target_resets_the_client() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let relay = FaultRelay::start(dead).await.unwrap();
    let mut stream = TcpStream::connect(relay.local_addr()).await.unwrap();
    let mut rest = Vec::new();
    let result = timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(result.unwrap_err().kind(), ErrorKind::ConnectionReset);
}
