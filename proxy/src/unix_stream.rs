//! A Unix-domain stream socket that wakes the node only when there is
//! something to read, or when a blocked write can go on.
//!
//! tokio's `UnixStream` registers for readable *and* writable edges for
//! its whole life. On a Unix socket (unlike TCP) the kernel signals a
//! writable edge every time the peer reads what we sent, so a relay that
//! writes a request and then waits for the answer is woken once more per
//! message for nothing: measured 3.3 wake-ups and context switches per
//! transaction instead of 2 for `pgbench -c 1` (docs/benchmarks.md). Here
//! the socket is registered for readable edges only; a write that finds the
//! socket full registers a duplicate of the descriptor for writable edges
//! until it can go on, which happens only under backpressure (a large
//! result to a slow client).

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// The most a single read asks for.
const MAX_READ: usize = 64 * 1024;

thread_local! {
    /// Where reads land first. Safe code can only read into initialised
    /// memory, and the caller's buffer is not (tokio's own sockets read
    /// into it with `unsafe`, which this workspace forbids): zeroing the
    /// caller's room at every read cost 2% of the node's CPU at 16
    /// clients. A zeroed buffer per thread, copied from, costs a copy of
    /// what was read.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; MAX_READ].into_boxed_slice());
}

/// A connected Unix-domain stream socket (see the module doc).
#[derive(Debug)]
pub struct UnixConn {
    io: AsyncFd<StdUnixStream>,
    /// A duplicate of the descriptor, registered for writable edges while
    /// a write waits for room.
    write_wait: Option<AsyncFd<OwnedFd>>,
}

impl UnixConn {
    /// Take over a connected socket (set non-blocking here). Must run
    /// inside the runtime.
    pub fn new(stream: StdUnixStream) -> io::Result<UnixConn> {
        stream.set_nonblocking(true)?;
        Ok(UnixConn { io: register(stream, Interest::READABLE)?, write_wait: None })
    }

    /// Take over a tokio socket (connected or accepted by tokio).
    pub fn from_tokio(stream: tokio::net::UnixStream) -> io::Result<UnixConn> {
        UnixConn::new(stream.into_std()?)
    }

    /// A non-blocking read (`WouldBlock` when nothing is there).
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.get_ref().read(buf)
    }

    /// A non-blocking write (`WouldBlock` when the socket is full).
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.io.get_ref().write(buf)
    }
}

/// Register `fd` with the runtime for `interest` edges.
///
/// `AsyncFd::with_interest` is deprecated because a generic `AsRawFd` may
/// hand out a different descriptor later; its replacement is `unsafe`,
/// which this workspace forbids. Both types used here own one descriptor
/// for life (`UnixStream`, `OwnedFd`), which is the condition for the
/// call to be sound.
#[allow(deprecated)]
fn register<T: std::os::fd::AsRawFd>(fd: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    AsyncFd::with_interest(fd, interest)
}

impl AsyncRead for UnixConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let mut guard = ready!(this.io.poll_read_ready(cx))?;
            let want = buf.remaining().min(MAX_READ);
            let read = guard.try_io(|s| {
                SCRATCH.with_borrow_mut(|scratch| {
                    let n = s.get_ref().read(&mut scratch[..want])?;
                    buf.put_slice(&scratch[..n]);
                    Ok(n)
                })
            });
            match read {
                Ok(Ok(n)) => {
                    // A short read emptied the socket: the next read would
                    // only find it empty (one more system call). More data
                    // brings a new edge. (tokio's own sockets do the same.)
                    if n > 0 && n < want {
                        guard.clear_ready();
                    }
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Readiness was stale: cleared by try_io; wait for the next edge.
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for UnixConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_wait.is_none() {
            match this.io.get_ref().write(data) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let dup = this.io.get_ref().try_clone().map(OwnedFd::from)?;
                    // Registering reports an edge at once if room has
                    // appeared since the write failed: nothing is missed.
                    this.write_wait = Some(register(dup, Interest::WRITABLE)?);
                }
                r => return Poll::Ready(r),
            }
        }
        loop {
            let wait = this.write_wait.as_ref().expect("set above");
            let mut guard = ready!(wait.poll_write_ready(cx))?;
            if let Ok(r) = guard.try_io(|_| this.io.get_ref().write(data)) {
                // Room again: back to readable edges only.
                this.write_wait = None;
                return Poll::Ready(r);
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.io.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Much more than a socket buffer holds, through a reader that is slow
    /// to start: the writer blocks, waits for room and finishes; every
    /// byte arrives in order.
    #[tokio::test]
    async fn a_blocked_write_waits_for_room_and_nothing_is_lost() {
        let (a, b) = StdUnixStream::pair().unwrap();
        let (mut a, mut b) = (UnixConn::new(a).unwrap(), UnixConn::new(b).unwrap());
        let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&data).await.unwrap();
            a.shutdown().await.unwrap();
            a
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes differ");
        let a = writer.await.unwrap();
        assert!(a.write_wait.is_none(), "the writable registration is dropped once there is room");
    }

    #[tokio::test]
    async fn request_and_answer_both_ways() {
        let (a, b) = StdUnixStream::pair().unwrap();
        let (mut a, mut b) = (UnixConn::new(a).unwrap(), UnixConn::new(b).unwrap());
        for i in 0..100u8 {
            a.write_all(&[i; 10]).await.unwrap();
            let mut buf = [0u8; 10];
            b.read_exact(&mut buf).await.unwrap();
            b.write_all(&buf).await.unwrap();
            a.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, [i; 10]);
        }
        assert!(matches!(a.try_read(&mut [0u8; 4]), Err(e) if e.kind() == io::ErrorKind::WouldBlock));
        drop(b);
        let mut rest = Vec::new();
        assert_eq!(a.read_to_end(&mut rest).await.unwrap(), 0, "end of stream after the peer closed");
    }
}
