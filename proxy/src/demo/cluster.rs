//! The demo's PostgreSQL side: one shard (`s1`) with a primary and a
//! streaming replica under `DIR/pg`, the app role and database, and the
//! sample schema.

use std::path::{Path, PathBuf};

use anyhow::Context;
use harness::{ClusterSpec, PgCluster, PgServer};

use super::state::PostgresServer;
use super::{APP_PASSWORD, APP_USER, DATABASE, REGION};

/// The shard every server belongs to for now.
pub const SHARD: &str = "s1";

/// The harness base directory inside the demo directory.
pub fn pg_dir(dir: &Path) -> PathBuf {
    dir.join("pg")
}

/// Starts shard `s1` (primary + one replica), creates the app role and
/// database, and loads the sample data. If anything fails, the servers
/// already started are stopped (the cluster's `Drop`).
pub async fn start(dir: &Path) -> anyhow::Result<PgCluster> {
    let spec = ClusterSpec::default().with_replicas(1).with_base_dir(pg_dir(dir)).with_name_prefix(SHARD);
    let cluster = PgCluster::start(spec).await.context("starting PostgreSQL (primary and replica)")?;
    cluster.create_user(APP_USER, APP_PASSWORD, true).await.context("creating the app role")?;
    cluster.create_database(DATABASE, APP_USER).await.context("creating the demo database")?;
    load_sample(cluster.primary()).await.context("loading the sample schema")?;
    cluster.wait_replicas_caught_up().await.context("waiting for the replica to catch up")?;
    Ok(cluster)
}

/// Connects to the demo database as the app role over the primary's Unix
/// socket (always trusted) and loads the schema, so the app owns it.
async fn load_sample(primary: &PgServer) -> anyhow::Result<()> {
    let mut config = primary.socket_config();
    config.user(APP_USER).dbname(DATABASE).application_name("meridian-demo");
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    let result = client.batch_execute(SAMPLE_SQL).await;
    drop(client);
    // The connection ends once the client is gone; its error, if any, is
    // already in `result`.
    let _ = driver.await;
    result?;
    Ok(())
}

/// The JSON description of each server of `cluster`.
pub fn describe(cluster: &PgCluster) -> Vec<PostgresServer> {
    cluster
        .servers()
        .iter()
        .map(|server| PostgresServer {
            name: server.name().to_owned(),
            shard: SHARD.into(),
            region: REGION.into(),
            role: server.role().to_string(),
            host: server.host().to_string(),
            port: server.port(),
            pid: server.pid(),
            data_dir: server.data_dir().to_path_buf(),
            url: Some(format!("postgresql://{APP_USER}:{APP_PASSWORD}@{}:{}/{DATABASE}", server.host(), server.port())),
            log_file: Some(server.log_file().to_path_buf()),
            extra: Default::default(),
        })
        .collect()
}

/// PostgreSQL servers left running in `DIR/pg`, found through each data
/// directory's `postmaster.pid`: `(data_dir, pid)`.
pub fn leftover_servers(dir: &Path) -> Vec<(PathBuf, u32)> {
    let Ok(entries) = std::fs::read_dir(pg_dir(dir)) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let data_dir = entry.path().join("data");
        let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
            continue;
        };
        if let Some(pid) = text.lines().next().and_then(|l| l.trim().parse::<u32>().ok())
            && super::state::is_alive(pid)
        {
            found.push((data_dir, pid));
        }
    }
    found
}

/// Stops the servers `servers` lists and any other found running in
/// `DIR/pg`. Servers already gone are fine. Returns the errors.
pub async fn stop_servers(dir: &Path, servers: &[PostgresServer]) -> Vec<anyhow::Error> {
    let mut targets: Vec<(PathBuf, u32)> =
        servers.iter().filter_map(|s| s.pid.map(|pid| (s.data_dir.clone(), pid))).collect();
    for leftover in leftover_servers(dir) {
        if !targets.contains(&leftover) {
            targets.push(leftover);
        }
    }
    // Replicas first, like harness does: they would only complain about
    // the lost primary otherwise.
    targets.reverse();
    let mut errors = Vec::new();
    for (data_dir, pid) in targets {
        match harness::stop_server(&data_dir, pid).await {
            Ok(()) => {}
            // The recorded server is gone and its pid now belongs to
            // another PostgreSQL server, which is not ours to stop.
            Err(harness::Error::NotOurServer { .. }) => {
                tracing::info!(pid, data_dir = %data_dir.display(), "recorded server is gone (pid reused)");
            }
            Err(e) => {
                errors.push(anyhow::Error::new(e).context(format!("stopping the server in {}", data_dir.display())))
            }
        }
    }
    errors
}

/// The sample schema: owners, their pets, and the sessions in which they
/// watched them, all keyed by `owner_id` (the future shard key). The data
/// is deterministic so examples and tests can rely on it: 100 owners, 250
/// pets, 600 watch sessions.
pub const SAMPLE_SQL: &str = r#"
CREATE TABLE owners (
    owner_id   bigint PRIMARY KEY,
    name       text NOT NULL,
    email      text NOT NULL,
    city       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pets (
    owner_id bigint NOT NULL REFERENCES owners (owner_id),
    pet_id   bigint GENERATED BY DEFAULT AS IDENTITY,
    name     text NOT NULL,
    species  text NOT NULL,
    born_on  date,
    PRIMARY KEY (owner_id, pet_id)
);

CREATE TABLE watch_sessions (
    owner_id   bigint NOT NULL,
    session_id bigint GENERATED BY DEFAULT AS IDENTITY,
    pet_id     bigint NOT NULL,
    started_at timestamptz NOT NULL,
    minutes    integer NOT NULL CHECK (minutes > 0),
    PRIMARY KEY (owner_id, session_id),
    FOREIGN KEY (owner_id, pet_id) REFERENCES pets (owner_id, pet_id)
);
CREATE INDEX watch_sessions_owner_started ON watch_sessions (owner_id, started_at);

INSERT INTO owners (owner_id, name, email, city, created_at)
SELECT i,
       (ARRAY['Ada','Grace','Alan','Edsger','Barbara','Donald','Frances','Ken','Radia','Tim'])[1 + i % 10]
         || ' ' || (ARRAY['Lovelace','Hopper','Turing','Dijkstra','Liskov','Knuth','Allen','Thompson','Perlman','Berners-Lee'])[1 + (i / 10) % 10],
       'owner' || i || '@example.com',
       (ARRAY['Lisbon','Oslo','Denver','Osaka','Cape Town'])[1 + i % 5],
       timestamptz '2024-01-01 00:00:00+00' + i * interval '1 day'
FROM generate_series(1, 100) AS i;

INSERT INTO pets (owner_id, pet_id, name, species, born_on)
SELECT 1 + (i - 1) % 100,
       i,
       (ARRAY['Rex','Luna','Milo','Bella','Ziggy','Nala','Otis','Pixel','Mochi','Biscuit','Pepper','Juno'])[1 + i % 12],
       (ARRAY['dog','cat','rabbit','parrot','tortoise'])[1 + i % 5],
       date '2012-01-01' + (i * 37) % 4000
FROM generate_series(1, 250) AS i;

INSERT INTO watch_sessions (owner_id, session_id, pet_id, started_at, minutes)
SELECT 1 + (p - 1) % 100, i, p, timestamptz '2025-01-01 00:00:00+00' + i * interval '37 minutes', 5 + (i * 7) % 55
FROM generate_series(1, 600) AS i, LATERAL (SELECT 1 + (i - 1) % 250 AS p) AS pet;

SELECT setval(pg_get_serial_sequence('pets', 'pet_id'), (SELECT max(pet_id) FROM pets));
SELECT setval(pg_get_serial_sequence('watch_sessions', 'session_id'), (SELECT max(session_id) FROM watch_sessions));
ANALYZE owners, pets, watch_sessions;
"#;
