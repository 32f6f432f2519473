//! The configuration files we write into each data directory.
//!
//! `initdb`'s `postgresql.conf` is kept as is, with one line appended by the
//! template step: `include 'meridian.conf'`. Everything we choose lives in
//! that included file, rewritten per server (its port and socket directory
//! differ), so a replica copied by `pg_basebackup` only needs its own
//! `meridian.conf` written over the primary's. `pg_hba.conf` is replaced
//! wholesale and travels to replicas with the base backup.

use std::path::Path;

use crate::cluster::HostAuth;
use crate::error::{IoContext, Result};

/// Name of the file, inside the data directory, holding our settings.
pub(crate) const INCLUDED_FILE: &str = "meridian.conf";

/// The line the template appends to `postgresql.conf`.
pub(crate) const INCLUDE_LINE: &str = "\ninclude 'meridian.conf'\n";

/// Settings that differ between servers or clusters.
#[derive(Debug)]
pub(crate) struct ServerConf<'a> {
    /// Shown in `ps` titles and `pg_stat_replication` via `cluster_name`.
    pub(crate) name: &'a str,
    pub(crate) port: u16,
    pub(crate) socket_dir: &'a Path,
    pub(crate) auth: HostAuth,
    /// Extra `postgresql.conf` lines from the spec; written last so they
    /// override our defaults.
    pub(crate) extra: &'a [String],
}

impl ServerConf<'_> {
    /// The contents of `meridian.conf`.
    pub(crate) fn render(&self) -> String {
        let password_encryption = match self.auth {
            HostAuth::Md5 => "md5",
            HostAuth::Trust | HostAuth::ScramSha256 => "scram-sha-256",
        };
        let mut text = format!(
            "# Written by the meridian test harness; rewritten on every cluster start.\n\
             cluster_name = {name}\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = {socket}\n\
             max_connections = 200\n\
             shared_buffers = 32MB\n\
             # Throwaway data: durability only costs time.\n\
             fsync = off\n\
             full_page_writes = on\n\
             wal_level = replica\n\
             # pg_rewind (REJOIN NODE) needs full-page writes and hint-bit changes in the WAL.\n\
             wal_log_hints = on\n\
             max_wal_senders = 10\n\
             max_replication_slots = 10\n\
             wal_keep_size = 256MB\n\
             hot_standby = on\n\
             # Dynamic shared memory as files in the data directory, so a\n\
             # SIGKILLed server leaves nothing behind in /dev/shm.\n\
             dynamic_shared_memory_type = mmap\n\
             password_encryption = '{password_encryption}'\n\
             logging_collector = off\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n\
             log_connections = off\n\
             log_checkpoints = off\n",
            name = quote(self.name),
            port = self.port,
            socket = quote(&self.socket_dir.to_string_lossy()),
        );
        if !self.extra.is_empty() {
            text.push_str("# From ClusterSpec::conf.\n");
            for line in self.extra {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// Writes `meridian.conf` into `data_dir`.
    pub(crate) fn write(&self, data_dir: &Path) -> Result<()> {
        let path = data_dir.join(INCLUDED_FILE);
        std::fs::write(&path, self.render()).io_context(|| format!("writing {}", path.display()))
    }
}

/// The contents of `pg_hba.conf`: the Unix socket always trusts (it is
/// private to the cluster and is how the harness itself connects), TCP uses
/// the spec's method for ordinary and replication connections alike.
pub(crate) fn render_hba(auth: HostAuth) -> String {
    let method = match auth {
        HostAuth::Trust => "trust",
        HostAuth::Md5 => "md5",
        HostAuth::ScramSha256 => "scram-sha-256",
    };
    format!(
        "# Written by the meridian test harness.\n\
         local all         all                trust\n\
         local replication all                trust\n\
         host  all         all   127.0.0.1/32 {method}\n\
         host  replication all   127.0.0.1/32 {method}\n\
         host  all         all   ::1/128      {method}\n\
         host  replication all   ::1/128      {method}\n"
    )
}

/// Writes `pg_hba.conf` into `data_dir`.
pub(crate) fn write_hba(data_dir: &Path, auth: HostAuth) -> Result<()> {
    let path = data_dir.join("pg_hba.conf");
    std::fs::write(&path, render_hba(auth)).io_context(|| format!("writing {}", path.display()))
}

/// A single-quoted configuration value.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_server_settings_with_extras_last() {
        let extra = vec!["max_connections = 50".to_owned()];
        let text = ServerConf {
            name: "pg-primary",
            port: 5999,
            socket_dir: Path::new("/tmp/it's"),
            auth: HostAuth::Md5,
            extra: &extra,
        }
        .render();
        assert!(text.contains("port = 5999\n"));
        assert!(text.contains("unix_socket_directories = '/tmp/it''s'\n"));
        assert!(text.contains("password_encryption = 'md5'\n"));
        assert!(text.contains("wal_log_hints = on\n"), "pg_rewind needs it");
        assert!(text.ends_with("max_connections = 50\n"));
    }

    #[test]
    fn hba_trusts_the_socket_and_uses_the_method_on_tcp() {
        let text = render_hba(HostAuth::ScramSha256);
        assert!(text.contains("local all         all                trust"));
        assert!(text.contains("host  all         all   127.0.0.1/32 scram-sha-256"));
        assert!(!render_hba(HostAuth::Trust).contains("scram"));
    }
}
