//! Where a server is and the socket to it: TCP, or a Unix-domain socket
//! when the server runs on this host.
//!
//! A server's address is `host:port`, as everywhere in the topology. A host
//! that starts with `/` is a directory holding PostgreSQL's Unix-domain
//! socket, as in libpq: `/var/run/postgresql:5432` is the socket
//! `/var/run/postgresql/.s.PGSQL.5432`. A Unix socket skips the loopback
//! TCP stack on the server leg, which is most of a local relay's CPU
//! (docs/benchmarks.md).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::unix_stream::UnixConn;

/// How to reach a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    /// `host:port`, resolved at connect time.
    Tcp(String),
    /// The socket file (`<dir>/.s.PGSQL.<port>`).
    Unix(PathBuf),
}

impl ServerAddr {
    /// Parse a topology address (`host:port`, or `/socket/dir:port`).
    pub fn parse(address: &str) -> Result<ServerAddr, String> {
        let (host, port) = address.rsplit_once(':').ok_or_else(|| format!("{address:?} is not host:port"))?;
        let port: u16 = port.parse().map_err(|_| format!("{address:?}: port {port:?} is not a number"))?;
        if host.is_empty() {
            return Err(format!("{address:?}: the host is empty"));
        }
        if host.starts_with('/') {
            return Ok(ServerAddr::Unix(PathBuf::from(host).join(format!(".s.PGSQL.{port}"))));
        }
        Ok(ServerAddr::Tcp(address.to_owned()))
    }

    /// Open a socket to the server (no timeout: the caller bounds it).
    pub async fn connect(&self) -> io::Result<ServerStream> {
        match self {
            ServerAddr::Tcp(a) => {
                let s = TcpStream::connect(a.as_str()).await?;
                s.set_nodelay(true)?;
                Ok(ServerStream::Tcp(s))
            }
            ServerAddr::Unix(path) => {
                Ok(ServerStream::Unix(UnixConn::from_tokio(tokio::net::UnixStream::connect(path).await?)?))
            }
        }
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAddr::Tcp(a) => f.write_str(a),
            ServerAddr::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A socket to a server.
#[derive(Debug)]
pub enum ServerStream {
    Tcp(TcpStream),
    Unix(UnixConn),
}

impl ServerStream {
    /// A non-blocking read (`WouldBlock` when nothing is there).
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ServerStream::Tcp(s) => s.try_read(buf),
            ServerStream::Unix(s) => s.try_read(buf),
        }
    }

    /// A non-blocking write (`WouldBlock` when the socket is full).
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ServerStream::Tcp(s) => s.try_write(buf),
            ServerStream::Unix(s) => s.try_write(buf),
        }
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            ServerStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            ServerStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            ServerStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ServerStream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServerStream::Tcp(s) => s.is_write_vectored(),
            ServerStream::Unix(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_libpq_reads_hosts() {
        assert_eq!(ServerAddr::parse("db1:5432"), Ok(ServerAddr::Tcp("db1:5432".into())));
        assert_eq!(ServerAddr::parse("[::1]:5432"), Ok(ServerAddr::Tcp("[::1]:5432".into())));
        assert_eq!(
            ServerAddr::parse("/var/run/postgresql:5433"),
            Ok(ServerAddr::Unix("/var/run/postgresql/.s.PGSQL.5433".into()))
        );
        assert_eq!(ServerAddr::parse("/tmp/x:5433").unwrap().to_string(), "/tmp/x/.s.PGSQL.5433");
        assert!(ServerAddr::parse("db1").is_err());
        assert!(ServerAddr::parse("db1:x").is_err());
        assert!(ServerAddr::parse(":5432").is_err());
    }

    #[tokio::test]
    async fn a_unix_socket_carries_bytes_both_ways() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::UnixListener::bind(dir.path().join(".s.PGSQL.7")).unwrap();
        let addr = ServerAddr::parse(&format!("{}:7", dir.path().display())).unwrap();
        let echo = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&b).await.unwrap();
        });
        let mut s = addr.connect().await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        echo.await.unwrap();
    }
}
