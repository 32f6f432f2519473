//! TLS for client connections: rustls with its aws-lc-rs provider, the only
//! crypto provider in the build. Its default key exchange order puts the
//! X25519MLKEM768 post-quantum hybrid first, so clients that offer it get it.

use std::io::BufReader;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use crate::config::{ConfigError, TlsConfig, TlsMode};

/// ALPN protocol name PostgreSQL clients send with direct TLS (PG17+).
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Build the acceptor for `cfg`, or `None` when TLS is disabled.
pub fn acceptor(cfg: &TlsConfig) -> Result<Option<TlsAcceptor>, ConfigError> {
    if cfg.mode == TlsMode::Disable {
        return Ok(None);
    }
    let (Some(cert_path), Some(key_path)) = (&cfg.cert, &cfg.key) else {
        return Err(ConfigError::TlsFilesMissing { mode: "allow" });
    };
    let open = |p: &std::path::Path| {
        std::fs::File::open(p).map(BufReader::new).map_err(|e| ConfigError::Tls(format!("{}: {e}", p.display())))
    };
    let certs = rustls_pemfile::certs(&mut open(cert_path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::Tls(format!("{}: {e}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError::Tls(format!("{}: no certificate found", cert_path.display())));
    }
    let key = rustls_pemfile::private_key(&mut open(key_path)?)
        .map_err(|e| ConfigError::Tls(format!("{}: {e}", key_path.display())))?
        .ok_or_else(|| ConfigError::Tls(format!("{}: no private key found", key_path.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError::Tls(e.to_string()))?;
    // Clients that send ALPN must ask for "postgresql"; older ones send none.
    server.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}
