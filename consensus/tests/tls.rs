//! Mutual TLS on the Raft endpoint: three members with certificates from
//! one CA form a group and replicate; a member whose certificate comes from
//! another CA cannot join, and connections without a certificate of the
//! group's CA are refused.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
mod common;

use common::{Cluster, add_region, free_port, tls_files};
use consensus::{ConsensusNode, Member, RaftTls, RequestError, StartError, Timings};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn timings() -> Timings {
    Timings {
        heartbeat_interval: Duration::from_millis(100),
        election_timeout_min: Duration::from_millis(500),
        election_timeout_max: Duration::from_millis(1000),
        // A membership change may take four of these: keep the refused
        // join short.
        forward_timeout: Duration::from_secs(1),
        ..Timings::default()
    }
}

/// A CA, and certificates it signs.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Result<Ca> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key)?;
        Ok(Ca { cert, key })
    }

    /// Write the CA certificate and member `id`'s certificate (for
    /// 127.0.0.1 and localhost, server and client) and key into `dir`, as
    /// `tls_files` names them.
    fn issue(&self, dir: &Path, id: u64) -> Result<RaftTls> {
        let files = tls_files(dir, id);
        std::fs::write(&files.ca, self.cert.pem())?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("meridian-{id}"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        std::fs::write(&files.cert, cert.pem())?;
        std::fs::write(&files.key, key.serialize_pem())?;
        Ok(files)
    }
}

/// POST `/raft/read_index` to `addr` over TLS, trusting `ca`, presenting
/// `client` (or no certificate); the raw answer, or why there is none.
async fn raw_read_index(addr: SocketAddr, ca: &Path, client: Option<&RaftTls>) -> Result<String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        Some(files) => {
            let chain = CertificateDer::pem_file_iter(&files.cert)?.collect::<Result<Vec<_>, _>>()?;
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(&files.key)?)?
        }
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let exchange = async {
        let mut tls = connector.connect(ServerName::try_from("127.0.0.1")?, tcp).await?;
        tls.write_all(
            b"POST /raft/read_index HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
              content-length: 4\r\nconnection: close\r\n\r\nnull",
        )
        .await?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await?;
        anyhow::Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange).await.context("no answer within 5 s")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_over_mutual_tls_and_no_stranger() -> Result<()> {
    let started = tokio::time::Instant::now();
    let certs = TempDir::new()?;
    let ca = Ca::new("meridian raft ca")?;
    for id in 1..=3 {
        ca.issue(certs.path(), id)?;
    }
    let cluster = Cluster::start_with(3, timings(), 56432, Some(certs.path().to_owned())).await?;
    assert!(cluster.member(1).raft_addr.starts_with("https://"));

    // The group works: a leader, a proposal through a follower applied
    // everywhere, linearizable reads and write leases on every member.
    let leader = cluster.leader(Duration::from_secs(10)).await?;
    let follower = cluster.follower_of(leader);
    follower.propose(add_region("eu-west")).await.context("propose over mutual tls")?;
    for node in cluster.running() {
        let topology = node.read_linearizable().await?;
        assert!(topology.regions.contains("eu-west"), "member {}", node.member().id);
    }
    cluster.all_leases_valid(Duration::from_secs(3)).await?;

    // The same request, by hand: with a member's certificate it is
    // answered ...
    let leader_addr = cluster.node(leader).local_addr();
    let ca_file = tls_files(certs.path(), 1).ca;
    let answer = raw_read_index(leader_addr, &ca_file, Some(&tls_files(certs.path(), 2))).await?;
    ensure!(answer.starts_with("HTTP/1.1 200"), "a member's request was not answered: {answer}");

    // ... with a certificate from another CA, or none, it is not.
    let rogue_certs = TempDir::new()?;
    let rogue_ca = Ca::new("some other ca")?;
    let rogue_files = rogue_ca.issue(rogue_certs.path(), 4)?;
    for (what, client) in [("another CA's certificate", Some(&rogue_files)), ("no certificate", None)] {
        match raw_read_index(leader_addr, &ca_file, client).await {
            Ok(answer) if answer.starts_with("HTTP/") => bail!("a client with {what} was answered: {answer}"),
            Ok(answer) => eprintln!("{what}: connection closed, {} bytes", answer.len()),
            Err(e) => eprintln!("{what}: refused: {e:#}"),
        }
    }
    // Plain HTTP to the TLS port gets no HTTP answer either.
    let mut tcp = tokio::net::TcpStream::connect(leader_addr).await?;
    tcp.write_all(b"POST /raft/read_index HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnull")
        .await?;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    ensure!(!answer.starts_with(b"HTTP/"), "plain http was answered: {}", String::from_utf8_lossy(&answer));

    // A member with another CA's certificate cannot join: the leader does
    // not accept its server certificate (nor would it accept the leader's
    // client certificate), so it never catches up and never votes.
    let rogue_dir = TempDir::new()?;
    let port = free_port()?;
    let rogue_member = Member {
        id: 4,
        name: "meridian-4".into(),
        region: "eu".into(),
        raft_addr: format!("https://127.0.0.1:{port}"),
        client_addr: "127.0.0.1:56999".into(),
    };
    let rogue = ConsensusNode::start(consensus::Config {
        member: rogue_member.clone(),
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        data_dir: rogue_dir.path().to_owned(),
        initial_members: Vec::new(),
        timings: timings(),
        tls: Some(rogue_files.clone()),
    })
    .await?;
    match follower.add_member(rogue_member).await {
        Err(RequestError::Refused(reason)) if reason.contains("catching up") => eprintln!("join refused: {reason}"),
        Err(RequestError::Timeout { what, .. }) if what.contains("catching up") => eprintln!("join timed out"),
        other => bail!("a member with another CA's certificate: {other:?}"),
    }
    let status = rogue.status().await;
    assert!(status.last_log_index.is_none() && status.leader.is_none(), "{status:?}");
    assert!(!cluster.node(leader).status().await.voters.contains(&4));
    // It stays a learner nobody can reach until removed.
    follower.remove_member(4).await.context("remove the stranger")?;
    for node in cluster.running() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let status = node.status().await;
            if status.members.keys().copied().eq([1, 2, 3]) {
                break;
            }
            ensure!(tokio::time::Instant::now() < deadline, "member {}: {:?}", status.id, status.members.keys());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    follower.propose(add_region("after-stranger")).await?;
    rogue.shutdown().await;
    cluster.shutdown().await;
    eprintln!("tls test took {:?}", started.elapsed());
    Ok(())
}

#[tokio::test]
async fn tls_settings_are_checked_at_start() -> Result<()> {
    let certs = TempDir::new()?;
    let files = Ca::new("meridian raft ca")?.issue(certs.path(), 1)?;
    let dir = TempDir::new()?;
    let config = |raft_addr: &str, tls: Option<RaftTls>| {
        let member = Member { id: 1, raft_addr: raft_addr.into(), ..Member::default() };
        consensus::Config {
            member: member.clone(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.path().to_owned(),
            initial_members: vec![member],
            timings: timings(),
            tls,
        }
    };
    let cases = [
        ("http with tls", config("http://127.0.0.1:1", Some(files.clone())), "https://"),
        ("https without tls", config("https://127.0.0.1:1", None), "http://"),
        (
            "a missing key",
            config("https://127.0.0.1:1", Some(RaftTls { key: certs.path().join("nope.key"), ..files.clone() })),
            "nope.key",
        ),
        (
            "a key for a cert",
            config("https://127.0.0.1:1", Some(RaftTls { key: files.cert.clone(), ..files })),
            "member-1",
        ),
    ];
    for (what, config, says) in cases {
        match ConsensusNode::start(config).await {
            Err(StartError::Tls(reason)) => assert!(reason.contains(says), "{what}: {reason}"),
            Err(e) => bail!("{what}: unexpected error {e}"),
            Ok(node) => {
                node.shutdown().await;
                bail!("{what} was accepted");
            }
        }
    }
    Ok(())
}
