//! The `meridian` binary's command line, without any server. (Being a test
//! of this package also makes `cargo test --workspace` build the binary
//! that the integration tests run.)

#![allow(clippy::unwrap_used)] // test helpers

use std::io::Write;
use std::process::{Command, Stdio};

fn meridian() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
}

fn passwd(args: &[&str], password: &str) -> std::process::Output {
    let mut child = meridian()
        .arg("passwd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(password.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn passwd_prints_secrets_the_users_file_accepts() {
    let out = passwd(&["--user", "app"], "s3cret\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let scram = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(scram.parse::<proxy::auth::ScramVerifier>().is_ok(), "{scram}");
    let out = passwd(&["--user", "app", "--method", "md5"], "s3cret");
    let md5 = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(md5, proxy::auth::md5::secret("app", "s3cret"));
    let users = format!(
        "[[user]]\nname = \"a\"\nsecret = \"{scram}\"\n\n[[user]]\nname = \"b\"\nauth = \"md5\"\nsecret = \"{md5}\"\n"
    );
    proxy::auth::Users::parse(&users, std::path::Path::new("users.toml")).unwrap();
    // The password never appears in the output.
    assert!(!scram.contains("s3cret") && !md5.contains("s3cret"));
}

#[test]
fn passwd_refuses_an_empty_password() {
    let out = passwd(&["--user", "app"], "\n");
    assert!(!out.status.success());
}

#[test]
fn serve_rejects_unknown_keys_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    std::fs::write(
        &cfg,
        "[node]\nname = \"n\"\n[listen]\naddress = \"127.0.0.1:0\"\nmax_clients = 5\n[auth]\nusers_file = \"u.toml\"\n[backend]\naddress = \"127.0.0.1:5432\"\n",
    )
    .unwrap();
    let out = meridian().args(["serve", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_clients"), "{err}");
}

#[test]
fn serve_reports_a_missing_users_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    std::fs::write(
        &cfg,
        "[node]\nname = \"n\"\n[listen]\naddress = \"127.0.0.1:0\"\n[auth]\nusers_file = \"nope.toml\"\n[backend]\naddress = \"127.0.0.1:5432\"\n",
    )
    .unwrap();
    let out = meridian().args(["serve", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope.toml"), "{err}");
}
