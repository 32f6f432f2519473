//! Client authentication (SCRAM-SHA-256, md5, trust), Meridian's own login
//! to PostgreSQL (SCRAM, md5, trust) and TLS: SSLRequest with
//! tokio-postgres-rustls, PostgreSQL 17 direct TLS with ALPN, refusing
//! plaintext when TLS is required, and the post-quantum key exchange.

use std::sync::Arc;

use anyhow::Context;
use harness::{ClusterSpec, HostAuth};
use integration_tests::{
    APP_PASSWORD, APP_USER, BedExtras, BedSpec, PgError, RawConn, TestBed, app_startup, fe, sqlstate,
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_postgres::NoTls;
use tokio_postgres::config::{SslMode, SslNegotiation};

/// The error a refused login ends with.
fn login_error(e: &tokio_postgres::Error) -> anyhow::Result<&tokio_postgres::error::DbError> {
    e.as_db_error().with_context(|| format!("not a server error: {e}"))
}

/// Connect with `config` (no TLS) and run one query.
async fn login_and_query(config: &tokio_postgres::Config) -> anyhow::Result<String> {
    let (client, conn) = config.connect(NoTls).await?;
    tokio::spawn(conn);
    Ok(client.query_one("SELECT current_user::text", &[]).await?.get(0))
}

/// The kind of the first authentication request the node sends for `user`
/// (10 = SASL, 5 = md5, 0 = ok).
async fn first_auth_request(bed: &TestBed, user: &str) -> anyhow::Result<i32> {
    let mut c = RawConn::connect(bed.addr).await?;
    c.send(&fe::startup(&[("user", user), ("database", "postgres")])).await?;
    let m = c.recv().await?.context("closed before an authentication request")?;
    anyhow::ensure!(m.tag == b'R', "expected an authentication request, got {:?}", m.error());
    Ok(i32::from_be_bytes(m.body[..4].try_into()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_login_and_refusals() -> anyhow::Result<()> {
    let bed = TestBed::start().await?;
    assert_eq!(login_and_query(&bed.config()).await?, APP_USER);

    let mut wrong = bed.config();
    wrong.password("not-the-password");
    let e = login_and_query(&wrong).await.err().context("wrong password accepted")?;
    let e = e.downcast_ref::<tokio_postgres::Error>().context("not a driver error")?;
    let wrong_db = login_error(e)?;
    assert_eq!((wrong_db.severity(), wrong_db.code().code()), ("FATAL", "28P01"));
    assert_eq!(wrong_db.message(), "password authentication failed for user \"app\"");

    // An unknown user gets the same exchange and the same answer.
    assert_eq!(first_auth_request(&bed, "nobody").await?, 10, "unknown user is not offered SCRAM");
    let mut unknown = bed.config();
    unknown.user("nobody");
    let e = login_and_query(&unknown).await.err().context("unknown user accepted")?;
    let e = e.downcast_ref::<tokio_postgres::Error>().context("not a driver error")?;
    let unknown_db = login_error(e)?;
    assert_eq!((unknown_db.severity(), unknown_db.code().code()), ("FATAL", "28P01"));
    assert_eq!(unknown_db.message(), "password authentication failed for user \"nobody\"");
    assert_eq!(wrong_db.detail(), unknown_db.detail());
    assert_eq!(wrong_db.hint(), unknown_db.hint());

    // The raw exchange: SCRAM with the right password, then a query.
    let mut c = RawConn::connect(bed.addr).await?;
    let info = c.login(&app_startup(), APP_PASSWORD).await?;
    assert!(info.parameters.contains_key("server_version"), "{info:?}");
    assert!(info.pid != 0);
    assert_eq!(c.simple_query("SELECT 1").await?.value(), Some("1"));
    // ... and a wrong one, seen as PostgreSQL's error.
    let mut c = RawConn::connect(bed.addr).await?;
    let e = c.login(&app_startup(), "wrong").await.err().context("wrong password accepted")?;
    let e = e.downcast_ref::<PgError>().with_context(|| format!("not a server error: {e}"))?;
    assert_eq!((e.severity.as_str(), e.code.as_str()), ("FATAL", "28P01"));
    assert!(c.until_closed().await?.is_empty(), "messages after the refusal");
    // A startup packet without a user name.
    let mut c = RawConn::connect(bed.addr).await?;
    let e = c.login(&[("database", "postgres")], "x").await.err().context("login without user accepted")?;
    let e = e.downcast_ref::<PgError>().with_context(|| format!("not a server error: {e}"))?;
    assert_eq!(e.code, "28000");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_client_auth() -> anyhow::Result<()> {
    let bed = TestBed::start_with(BedSpec { client_auth: "md5", ..BedSpec::default() }).await?;
    assert_eq!(first_auth_request(&bed, APP_USER).await?, 5);
    assert_eq!(login_and_query(&bed.config()).await?, APP_USER);
    let mut c = RawConn::connect(bed.addr).await?;
    c.login(&app_startup(), APP_PASSWORD).await?;
    assert_eq!(c.simple_query("SELECT 2").await?.value(), Some("2"));
    let mut wrong = bed.config();
    wrong.password("nope");
    let e = login_and_query(&wrong).await.err().context("wrong md5 password accepted")?;
    let e = e.downcast_ref::<tokio_postgres::Error>().context("not a driver error")?;
    assert_eq!(sqlstate(e), Some("28P01"), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_client_auth() -> anyhow::Result<()> {
    let bed = TestBed::start_with(BedSpec { client_auth: "trust", ..BedSpec::default() }).await?;
    assert_eq!(first_auth_request(&bed, APP_USER).await?, 0);
    let mut config = tokio_postgres::Config::new();
    config.host(bed.addr.ip().to_string()).port(bed.addr.port()).user(APP_USER).dbname("postgres");
    assert_eq!(login_and_query(&config).await?, APP_USER);
    // Trust for one user is not trust for others.
    assert_eq!(first_auth_request(&bed, "someone_else").await?, 10);
    Ok(())
}

/// Meridian logs in to PostgreSQL with each method PostgreSQL may demand,
/// and a wrong backend password is reported to the client, not hidden.
async fn backend_auth(host_auth: HostAuth) -> anyhow::Result<()> {
    let bed = TestBed::start_with(BedSpec {
        cluster: ClusterSpec::default().with_host_auth(host_auth),
        extra_config: "[pool]\nsize = 2\n".into(),
        extra_users: "[[user]]\nname = \"badpw\"\nauth = \"trust\"\nbackend_password = \"not-its-password\"\n".into(),
        ..BedSpec::default()
    })
    .await?;
    bed.cluster.create_user("badpw", "its-password", false).await?;
    let (client, conn) = bed.config().connect(NoTls).await?;
    tokio::spawn(conn);
    for i in 0..5i64 {
        let got: i64 = client.query_one("SELECT $1::int8", &[&i]).await?.get(0);
        assert_eq!(got, i);
    }
    // Two server connections get opened and logged in.
    let (mut c1, mut c2) = (bed.connect().await?, bed.connect().await?);
    let (t1, t2) = (c1.transaction().await?, c2.transaction().await?);
    let p1: i32 = t1.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
    let p2: i32 = t2.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
    assert_ne!(p1, p2);
    t1.commit().await?;
    t2.commit().await?;
    let mut config = bed.config();
    config.user("badpw");
    let e = login_and_query(&config).await.err();
    if host_auth == HostAuth::Trust {
        anyhow::ensure!(e.is_none(), "trust backend refused: {e:?}");
    } else {
        let e = e.context("a wrong backend password worked")?;
        let e = e.downcast_ref::<tokio_postgres::Error>().context("not a driver error")?;
        assert_eq!(sqlstate(e), Some("28P01"), "{e}");
    }
    // The failed login did not disturb anyone.
    assert_eq!(client.query_one("SELECT 9::int8", &[]).await?.get::<_, i64>(0), 9);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_requires_scram() -> anyhow::Result<()> {
    backend_auth(HostAuth::ScramSha256).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_requires_md5() -> anyhow::Result<()> {
    backend_auth(HostAuth::Md5).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_trusts() -> anyhow::Result<()> {
    backend_auth(HostAuth::Trust).await
}

/// A CA and a server certificate for `localhost` and `127.0.0.1`.
struct TestPki {
    ca: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

fn test_pki() -> anyhow::Result<TestPki> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "Meridian test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, "meridian test server");
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    Ok(TestPki { ca: ca.der().clone(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// A bed with TLS in `mode`, and a client config that trusts its CA.
async fn tls_bed(mode: &str) -> anyhow::Result<(TestBed, rustls::ClientConfig)> {
    tls_bed_listening(mode, String::new()).await
}

/// [`tls_bed`] with extra `[listen]` keys.
async fn tls_bed_listening(mode: &str, listen: String) -> anyhow::Result<(TestBed, rustls::ClientConfig)> {
    let pki = test_pki()?;
    let bed = TestBed::start_custom(
        BedSpec {
            extra_config: format!("[tls]\nmode = \"{mode}\"\ncert = \"server.crt\"\nkey = \"server.key\"\n"),
            ..BedSpec::default()
        },
        BedExtras {
            files: vec![
                ("server.crt".into(), pki.cert_pem.into_bytes()),
                ("server.key".into(), pki.key_pem.into_bytes()),
            ],
            listen,
        },
    )
    .await?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((bed, client))
}

async fn tls_client(
    config: &tokio_postgres::Config,
    tls: &rustls::ClientConfig,
) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls.clone())).await?;
    tokio::spawn(conn);
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_serves_tls_clients_and_refuses_plaintext() -> anyhow::Result<()> {
    let (bed, tls) = tls_bed("require").await?;
    let mut config = bed.config();
    config.ssl_mode(SslMode::Require);
    let client = tls_client(&config, &tls).await?;
    client.batch_execute("CREATE TABLE tls_t (id int8, payload bytea)").await?;
    let payload = vec![7u8; 200_000];
    for i in 0..20i64 {
        client.execute("INSERT INTO tls_t VALUES ($1, $2)", &[&i, &payload]).await?;
    }
    let row = client.query_one("SELECT count(*), sum(length(payload))::int8 FROM tls_t", &[]).await?;
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (20, 20 * 200_000));
    let back: Vec<u8> = client.query_one("SELECT payload FROM tls_t WHERE id = 3", &[]).await?.get(0);
    assert_eq!(back, payload);
    // Several TLS clients at once.
    let mut tasks = Vec::new();
    for i in 0..4i64 {
        let (config, tls) = (config.clone(), tls.clone());
        tasks.push(tokio::spawn(async move {
            let c = tls_client(&config, &tls).await?;
            for j in 0..10i64 {
                let got: i64 = c.query_one("SELECT $1::int8 + $2::int8", &[&i, &j]).await?.get(0);
                anyhow::ensure!(got == i + j);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }

    // Plaintext: refused with 28000.
    let mut plain = bed.config();
    plain.ssl_mode(SslMode::Disable);
    let e = plain.connect(NoTls).await.err().context("plaintext login accepted")?;
    assert_eq!(sqlstate(&e), Some("28000"), "{e}");
    let mut raw = RawConn::connect(bed.addr).await?;
    let e = raw.login(&app_startup(), APP_PASSWORD).await.err().context("plaintext login accepted")?;
    let e = e.downcast_ref::<PgError>().with_context(|| format!("not a server error: {e}"))?;
    assert_eq!((e.severity.as_str(), e.code.as_str()), ("FATAL", "28000"));
    // A client that does not trust the certificate cannot connect.
    let untrusting =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
    assert!(tls_client(&config, &untrusting).await.is_err(), "untrusted certificate accepted");
    // The node still serves TLS clients after all that.
    assert_eq!(client.query_one("SELECT 1::int8", &[]).await?.get::<_, i64>(0), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_allow_accepts_both() -> anyhow::Result<()> {
    let (bed, tls) = tls_bed("allow").await?;
    let mut config = bed.config();
    config.ssl_mode(SslMode::Require);
    let secure = tls_client(&config, &tls).await?;
    let plain = bed.connect().await?;
    assert_eq!(secure.query_one("SELECT 1::int8", &[]).await?.get::<_, i64>(0), 1);
    assert_eq!(plain.query_one("SELECT 2::int8", &[]).await?.get::<_, i64>(0), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_request_is_declined_when_tls_is_off() -> anyhow::Result<()> {
    let bed = TestBed::start().await?;
    let mut raw = RawConn::connect(bed.addr).await?;
    raw.send(&fe::ssl_request()).await?;
    assert_eq!(raw.recv_byte().await?, b'N');
    // The same connection goes on in plaintext.
    raw.login(&app_startup(), APP_PASSWORD).await?;
    assert_eq!(raw.simple_query("SELECT 3").await?.value(), Some("3"));
    // tokio-postgres' default (prefer) falls back to plaintext too.
    let mut config = bed.config();
    config.ssl_mode(SslMode::Prefer);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let c = tls_client(&config, &tls).await?;
    assert_eq!(c.query_one("SELECT 4::int8", &[]).await?.get::<_, i64>(0), 4);
    Ok(())
}

/// PostgreSQL 17 direct TLS: the connection starts with a TLS ClientHello
/// that asks for ALPN "postgresql"; no SSLRequest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_with_alpn() -> anyhow::Result<()> {
    let (bed, tls) = tls_bed("require").await?;
    let mut alpn = tls.clone();
    alpn.alpn_protocols = vec![b"postgresql".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(alpn.clone()));
    let tcp = tokio::net::TcpStream::connect(bed.addr).await?;
    let stream = connector.connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp).await?;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    let mut raw = RawConn::new(stream);
    let info = raw.login(&app_startup(), APP_PASSWORD).await?;
    assert!(info.parameters.contains_key("server_version"));
    let out = raw.simple_query("SELECT current_user, 40 + 2").await?;
    assert_eq!(out.rows, vec![vec![Some(APP_USER.to_owned()), Some("42".to_owned())]]);
    raw.send(&fe::terminate()).await?;

    // tokio-postgres' own direct negotiation, with the same ALPN.
    let mut config = bed.config();
    config.ssl_mode(SslMode::Require).ssl_negotiation(SslNegotiation::Direct);
    let client = tls_client(&config, &alpn).await?;
    assert_eq!(client.query_one("SELECT 5::int8", &[]).await?.get::<_, i64>(0), 5);

    // Without ALPN the node must not serve the connection.
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(bed.addr).await?;
    if let Ok(stream) = connector.connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp).await {
        let mut raw = RawConn::new(stream);
        let _ = raw.send(&fe::startup(&app_startup())).await;
        let seen = raw.until_closed().await.unwrap_or_default();
        assert!(
            seen.iter().all(|m| m.tag == b'E'),
            "direct TLS without ALPN was served: {:?}",
            seen.iter().map(|m| m.tag as char).collect::<String>()
        );
    }
    Ok(())
}

/// With the aws-lc-rs provider on both sides the handshake uses the
/// X25519MLKEM768 post-quantum hybrid key exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_key_exchange_is_x25519mlkem768() -> anyhow::Result<()> {
    let (bed, tls) = tls_bed("require").await?;
    let mut raw = RawConn::connect(bed.addr).await?;
    raw.send(&fe::ssl_request()).await?;
    assert_eq!(raw.recv_byte().await?, b'S');
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let stream = connector.connect(ServerName::try_from("localhost")?.to_owned(), raw.stream).await?;
    let conn = stream.get_ref().1;
    assert_eq!(conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let group = conn.negotiated_key_exchange_group().context("no key exchange group negotiated")?;
    assert_eq!(group.name(), rustls::NamedGroup::X25519MLKEM768);
    // And the session works over it.
    let mut raw = RawConn::new(stream);
    raw.login(&app_startup(), APP_PASSWORD).await?;
    assert_eq!(raw.simple_query("SELECT 6").await?.value(), Some("6"));
    Ok(())
}

/// The local socket (`listen.unix_socket_dir`): SCRAM login, queries and a
/// cancel over it. `tls.mode = 'require'` does not apply there (the bytes
/// never leave the host, and PostgreSQL offers no TLS on its socket
/// either); a wrong password is refused as over TCP. The socket file goes
/// when the node stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_socket_logs_in_like_tcp_without_tls() -> anyhow::Result<()> {
    let socket_dir = tempfile::tempdir()?;
    let listen = format!("unix_socket_dir = \"{}\"", socket_dir.path().display());
    let (mut bed, _tls) = tls_bed_listening("require", listen).await?;
    let socket = socket_dir.path().join(format!(".s.PGSQL.{}", bed.addr.port()));
    assert!(socket.exists(), "no socket at {}", socket.display());
    let mut config = tokio_postgres::Config::new();
    config.host_path(socket_dir.path()).port(bed.addr.port()).user(APP_USER).password(APP_PASSWORD).dbname("postgres");
    assert_eq!(login_and_query(&config).await?, APP_USER);

    let mut wrong = config.clone();
    wrong.password("not the password");
    let e = wrong.connect(NoTls).await.err().context("a wrong password was accepted")?;
    assert_eq!(sqlstate(&e), Some("28P01"), "{e}");

    let (client, conn) = config.connect(NoTls).await?;
    tokio::spawn(conn);
    // A result far larger than a socket buffer, in both directions.
    let big = "x".repeat(1_000_000);
    let rows = client.query("SELECT $1::text || g FROM generate_series(1, 8) g", &[&big]).await?;
    assert_eq!(rows.len(), 8);
    assert!(rows.iter().all(|r| r.get::<_, String>(0).len() == 1_000_001));
    integration_tests::cancel_a_running_sleep(client, bed.cluster.primary(), "local-cancel").await?;

    bed.shutdown().await;
    assert!(!socket.exists(), "the socket file outlived the node");
    Ok(())
}
