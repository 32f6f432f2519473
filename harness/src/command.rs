//! Running PostgreSQL tools and turning their failures into [`Error`]s.

use std::fmt::Write as _;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::error::{Error, IoContext, Result};

/// Runs `command` to completion within `timeout`, capturing its output.
///
/// On failure the error carries the command line and everything it printed,
/// which for `initdb` and `pg_basebackup` is where the real reason is. The
/// child is killed if the timeout expires (commands are built with
/// `kill_on_drop`).
pub(crate) async fn run(mut command: Command, timeout: Duration) -> Result<String> {
    let line = describe(&command);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .map_err(|_| Error::Io {
            action: format!("running {line}"),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no exit within {timeout:?}")),
        })?
        .io_context(|| format!("running {line}"))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.trim().is_empty() {
        let _ = write!(text, "{}{}", if text.is_empty() { "" } else { "\n" }, stderr);
    }
    if output.status.success() {
        Ok(text)
    } else {
        Err(Error::Command { command: line, status: output.status, output: text.trim().to_owned() })
    }
}

/// The program and its arguments, space separated, for messages.
fn describe(command: &Command) -> String {
    let std = command.as_std();
    std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
