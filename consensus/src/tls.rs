//! Mutual TLS for the Raft RPC (optional: [`Config::tls`](crate::Config)).
//!
//! ```text
//!   member A (client)                         member B (server)
//!   Connector: TCP, then TLS  ───────────▶    Listener: accept TCP, TLS
//!     presents A's cert                         handshake off the accept
//!     checks B's cert against the CA,           loop, requires a client
//!     for the host of B's raft_addr             cert signed by the CA
//! ```
//!
//! Every member holds the same CA certificate and its own certificate and
//! key (PEM files). A member only talks to peers whose certificate the CA
//! signed, both ways: the server refuses a client without such a
//! certificate during the handshake, before any HTTP is read, and the
//! client refuses a server whose certificate does not match the host of
//! its `raft_addr` (`https://host:port`; an IP address needs an IP SAN).
//! Nothing else identifies a peer: any holder of a CA-signed certificate
//! is trusted as a member, so keep the CA for the Raft group only.
//!
//! rustls with the aws-lc-rs provider, TLS 1.2 and 1.3. A member with TLS
//! never speaks plain HTTP (an `http://` peer address is refused), and a
//! member without it refuses `https://` addresses.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::StartError;
use crate::config::RaftTls;

/// How long an incoming connection may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The rustls configurations of one member, loaded once at start.
#[derive(Clone)]
pub(crate) struct TlsConfigs {
    pub(crate) server: Arc<ServerConfig>,
    pub(crate) client: Arc<ClientConfig>,
}

/// Read the CA, the member's certificate chain and key, and build both
/// sides' configurations.
pub(crate) fn load(tls: &RaftTls) -> Result<TlsConfigs, StartError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in read_certs(&tls.ca)? {
        roots.add(cert).map_err(|e| bad(&tls.ca, e))?;
    }
    let roots = Arc::new(roots);
    let chain = read_certs(&tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| bad(&tls.key, e))?;

    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| bad(&tls.ca, e))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| bad(&tls.cert, e))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];

    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad(&tls.cert, e))?;
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConfigs { server: Arc::new(server), client: Arc::new(client) })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, StartError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(path, e))?;
    if certs.is_empty() {
        return Err(StartError::Tls(format!("{}: no certificate in the file", path.display())));
    }
    Ok(certs)
}

fn bad(path: &Path, e: impl std::fmt::Display) -> StartError {
    StartError::Tls(format!("{}: {e}", path.display()))
}

/// The Raft listener with TLS: handshakes run beside the accept loop (a
/// slow or silent client does not hold up the others) and only connections
/// that completed one reach the HTTP server.
pub(crate) struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handshakes: JoinSet<Option<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub(crate) fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> TlsListener {
        TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(config), handshakes: JoinSet::new() }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            // Both branches are cancel-safe: `TcpListener::accept` and
            // `JoinSet::join_next`.
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let handshake = self.acceptor.accept(stream);
                        self.handshakes.spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                                Ok(Ok(stream)) => Some((stream, peer)),
                                Ok(Err(e)) => {
                                    tracing::warn!(%peer, error = %e, "raft tls handshake refused");
                                    None
                                }
                                Err(_) => {
                                    tracing::warn!(%peer, "raft tls handshake timed out");
                                    None
                                }
                            }
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off.
                        tracing::warn!(error = %e, "raft listener cannot accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// hyper-util's connector for Raft peers: TCP, then TLS for `https://`
/// addresses when this member has TLS (and an error in every other
/// combination).
#[derive(Clone)]
pub(crate) struct Connector {
    http: HttpConnector,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Connector {
    pub(crate) fn new(mut http: HttpConnector, tls: Option<Arc<ClientConfig>>) -> Connector {
        http.enforce_http(false);
        Connector { http, tls: tls.map(tokio_rustls::TlsConnector::from) }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<RaftIo>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TokioIo<RaftIo>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut http = self.http.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let https = match uri.scheme_str() {
                Some("https") => true,
                Some("http") => false,
                other => return Err(format!("unsupported scheme {other:?} in {uri}").into()),
            };
            let host = uri.host().ok_or_else(|| format!("no host in {uri}"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let tls = match (https, tls) {
                (true, Some(tls)) => Some(tls),
                (false, None) => None,
                (true, None) => return Err(format!("{uri}: https address, but raft tls is not configured").into()),
                (false, Some(_)) => return Err(format!("{uri}: plain http refused, raft tls is configured").into()),
            };
            let tcp = tower_service::Service::call(&mut http, uri).await?.into_inner();
            let Some(tls) = tls else {
                return Ok(TokioIo::new(RaftIo::Plain(tcp)));
            };
            let name = ServerName::try_from(host)?;
            let stream = tls.connect(name, tcp).await?;
            Ok(TokioIo::new(RaftIo::Tls(Box::new(stream))))
        })
    }
}

/// A connection to a peer, with or without TLS.
pub(crate) enum RaftIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection for RaftIo {
    fn connected(&self) -> Connected {
        match self {
            RaftIo::Plain(tcp) => tcp.connected(),
            RaftIo::Tls(tls) => tls.get_ref().0.connected(),
        }
    }
}

impl AsyncRead for RaftIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RaftIo::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            RaftIo::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for RaftIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            RaftIo::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            RaftIo::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RaftIo::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            RaftIo::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RaftIo::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            RaftIo::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
