//! The node's Unix-domain socket for clients on the same host
//! (`listen.unix_socket_dir`): `<dir>/.s.PGSQL.<port>`, the name libpq
//! looks for, so `psql -h <dir> -p <port>` and pgbench reach Meridian the
//! way they reach a local PostgreSQL, without the loopback TCP stack.
//!
//! Clients on it log in as over TCP (same users, same methods); TLS is not
//! offered there, as in PostgreSQL, and `tls.mode = 'require'` does not
//! apply to it: the bytes never leave the host.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

use crate::unix_stream::UnixConn;

/// A bound local socket; the socket file is removed on drop.
#[derive(Debug)]
pub struct LocalListener {
    listener: UnixListener,
    path: PathBuf,
}

impl LocalListener {
    /// Bind `<dir>/.s.PGSQL.<port>`. A socket file left by a node that
    /// died is replaced; one that a running process still accepts on is
    /// an error (`AddrInUse`), as for a TCP address.
    pub async fn bind(dir: &Path, port: u16) -> io::Result<LocalListener> {
        let path = dir.join(format!(".s.PGSQL.{port}"));
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            if UnixStream::connect(&path).await.is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by another process", path.display()),
                ));
            }
            std::fs::remove_file(&path)?;
        }
        let listener = UnixListener::bind(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display())))?;
        // Like PostgreSQL's default unix_socket_permissions: any local user
        // may connect; logging in is what is checked.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))?;
        Ok(LocalListener { listener, path })
    }

    pub async fn accept(&self) -> io::Result<UnixConn> {
        let (s, _) = self.listener.accept().await?;
        UnixConn::from_tokio(s)
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LocalListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = LocalListener::bind(dir.path(), 5999).await.unwrap();
        assert_eq!(first.path(), dir.path().join(".s.PGSQL.5999"));
        let e = LocalListener::bind(dir.path(), 5999).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        drop(first);
        // A node that died leaves its socket file behind, with nobody
        // accepting on it.
        drop(std::os::unix::net::UnixListener::bind(dir.path().join(".s.PGSQL.5999")).unwrap());
        let second = LocalListener::bind(dir.path(), 5999).await.unwrap();
        let path = second.path().to_owned();
        drop(second);
        assert!(!path.exists(), "the socket file is removed on drop");
        std::fs::write(&path, b"not a socket").unwrap();
        assert_eq!(LocalListener::bind(dir.path(), 5999).await.unwrap_err().kind(), io::ErrorKind::AlreadyExists);
    }
}
