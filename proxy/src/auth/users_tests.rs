//! Users file tests: parse, validate, and the secrets that must not show.

use std::path::Path;

use super::scram::ScramVerifier;
use super::users::{AuthMethod, Credential, PoolMode, Secret, Users, UsersError};

fn scram_secret() -> String {
    postgres_protocol::password::scram_sha_256(b"app-password")
}

fn parse(text: &str) -> Result<Users, UsersError> {
    Users::parse(text, Path::new("/nonexistent/users.toml"))
}

#[test]
fn full_file_parses() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("reporting.pw"), "  from-file-pw  \nignored\n").unwrap();
    let path = dir.path().join("users.toml");
    let scram = scram_secret();
    std::fs::write(
        &path,
        format!(
            r#"
[[user]]
name = "app"
secret = "{scram}"
backend_password = "backend-pw"
pool_mode = "transaction"

[[user]]
name = "legacy"
auth = "md5"
secret = "md553f48b7c4b76a86ce72276c5755f217d"

[[user]]
name = "reporting"
auth = "trust"
backend_password_file = "reporting.pw"
admin = true
pool_mode = "session"
"#
        ),
    )
    .unwrap();

    let users = Users::load(&path).unwrap();
    assert_eq!(users.len(), 3);

    let app = users.get("app").unwrap();
    assert_eq!(app.credential, Credential::Scram(scram.parse().unwrap()));
    assert_eq!(app.credential.method(), AuthMethod::ScramSha256);
    assert_eq!(app.backend_password, Some(Secret::new("backend-pw")));
    assert!(!app.admin);
    assert_eq!(app.pool_mode, Some(PoolMode::Transaction));

    let legacy = users.get("legacy").unwrap();
    assert_eq!(legacy.credential, Credential::Md5("md553f48b7c4b76a86ce72276c5755f217d".into()));
    assert_eq!(legacy.backend_password, None);
    assert_eq!(legacy.pool_mode, None);

    let reporting = users.get("reporting").unwrap();
    assert_eq!(reporting.credential, Credential::Trust);
    assert_eq!(reporting.backend_password.as_ref().map(Secret::expose), Some("from-file-pw"));
    assert!(reporting.admin);
    assert_eq!(reporting.pool_mode, Some(PoolMode::Session));

    assert!(users.get("APP").is_none(), "names match exactly");
    let names: Vec<_> = users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["app", "legacy", "reporting"]);
}

#[test]
fn empty_file_means_no_users() {
    let users = parse("").unwrap();
    assert!(users.is_empty());
}

/// Asserts that `text` fails, that the error has the expected shape, and
/// that its message names every one of `needles`.
fn assert_fails(text: &str, check: fn(&UsersError) -> bool, needles: &[&str]) {
    let err = parse(text).unwrap_err();
    assert!(check(&err), "unexpected error variant: {err:?}");
    let message = err.to_string();
    for needle in needles {
        assert!(message.contains(needle), "{message:?} should mention {needle:?}");
    }
}

#[test]
fn validation_errors_name_user_and_key() {
    let scram = scram_secret();

    assert_fails(
        "[[user]]\nname = \"app\"\n",
        |e| matches!(e, UsersError::MissingSecret { user, auth: AuthMethod::ScramSha256 } if user == "app"),
        &["\"app\"", "`secret`", "scram-sha-256"],
    );
    assert_fails(
        "[[user]]\nname = \"old\"\nauth = \"md5\"\n",
        |e| matches!(e, UsersError::MissingSecret { auth: AuthMethod::Md5, .. }),
        &["\"old\"", "`secret`", "md5"],
    );
    assert_fails(
        "[[user]]\nname = \"app\"\nsecret = \"SCRAM-SHA-256$4096:AAAA$AAAA:AAAA\"\n",
        |e| matches!(e, UsersError::InvalidScramSecret { user, .. } if user == "app"),
        &["\"app\"", "`secret`"],
    );
    assert_fails(
        "[[user]]\nname = \"app\"\nsecret = \"md553f48b7c4b76a86ce72276c5755f217d\"\n",
        |e| matches!(e, UsersError::InvalidScramSecret { .. }),
        &["\"app\"", "`secret`"],
    );
    assert_fails(
        "[[user]]\nname = \"old\"\nauth = \"md5\"\nsecret = \"md553F48B7C4B76A86CE72276C5755F217D\"\n",
        |e| matches!(e, UsersError::InvalidMd5Secret { user } if user == "old"),
        &["\"old\"", "`secret`", "md5"],
    );
    assert_fails(
        &format!("[[user]]\nname = \"old\"\nauth = \"md5\"\nsecret = \"{scram}\"\n"),
        |e| matches!(e, UsersError::InvalidMd5Secret { .. }),
        &["\"old\"", "`secret`"],
    );
    assert_fails(
        "[[user]]\nname = \"t\"\nauth = \"trust\"\nsecret = \"md553f48b7c4b76a86ce72276c5755f217d\"\n",
        |e| matches!(e, UsersError::UnexpectedSecret { user } if user == "t"),
        &["\"t\"", "`secret`", "trust"],
    );
    assert_fails(
        &format!("[[user]]\nname = \"app\"\nsecret = \"{scram}\"\n[[user]]\nname = \"app\"\nauth = \"trust\"\n"),
        |e| matches!(e, UsersError::DuplicateUser { user } if user == "app"),
        &["\"app\"", "`name`"],
    );
    assert_fails(
        "[[user]]\nname = \"\"\nauth = \"trust\"\n",
        |e| matches!(e, UsersError::EmptyName { index: 1 }),
        &["`name`", "1"],
    );
    assert_fails(
        "[[user]]\nname = \"t\"\nauth = \"trust\"\nbackend_password = \"a\"\nbackend_password_file = \"b\"\n",
        |e| matches!(e, UsersError::ConflictingBackendPassword { user } if user == "t"),
        &["\"t\"", "`backend_password`", "`backend_password_file`"],
    );
    assert_fails(
        "[[user]]\nname = \"t\"\nauth = \"trust\"\nbackend_password = \"\"\n",
        |e| matches!(e, UsersError::EmptyBackendPassword { user, key: "backend_password" } if user == "t"),
        &["\"t\"", "`backend_password`"],
    );
    assert_fails(
        "[[user]]\nname = \"t\"\nauth = \"trust\"\nbackend_password_file = \"missing.pw\"\n",
        |e| matches!(e, UsersError::BackendPasswordFile { user, .. } if user == "t"),
        &["\"t\"", "`backend_password_file`", "missing.pw"],
    );
}

#[test]
fn empty_backend_password_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blank.pw"), "   \nsecond line\n").unwrap();
    let err = Users::parse(
        "[[user]]\nname = \"t\"\nauth = \"trust\"\nbackend_password_file = \"blank.pw\"\n",
        &dir.path().join("users.toml"),
    )
    .unwrap_err();
    assert!(matches!(err, UsersError::EmptyBackendPassword { key: "backend_password_file", .. }), "{err:?}");
}

#[test]
fn shape_errors_name_the_key_and_position() {
    assert_fails(
        "[[user]]\nname = \"app\"\nauth = \"trust\"\npasword = \"x\"\n",
        |e| matches!(e, UsersError::Parse { line: 4, .. }),
        &["pasword", "line 4", "users.toml"],
    );
    assert_fails(
        "[[user]]\nname = \"app\"\nauth = \"password\"\n",
        |e| matches!(e, UsersError::Parse { line: 3, .. }),
        &["password", "scram-sha-256", "line 3"],
    );
    assert_fails(
        "[[user]]\nname = \"app\"\nauth = \"trust\"\npool_mode = \"statement\"\n",
        |e| matches!(e, UsersError::Parse { line: 4, .. }),
        &["statement", "transaction"],
    );
    assert_fails("[[users]]\nname = \"app\"\n", |e| matches!(e, UsersError::Parse { .. }), &["users"]);
    assert_fails("[[user]]\nauth = \"trust\"\n", |e| matches!(e, UsersError::Parse { .. }), &["name"]);
}

#[test]
fn parse_errors_do_not_echo_secret_lines() {
    // A syntax error on the backend_password line: the message must not quote
    // the line the way toml's default Display does.
    let err = parse("[[user]]\nname = \"t\"\nauth = \"trust\"\nbackend_password = \"hunter2\" oops\n").unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, UsersError::Parse { line: 4, .. }), "{err:?}");
    assert!(!message.contains("hunter2"), "{message}");

    // A password typed into a key of another type: serde would quote it.
    let err = parse("[[user]]\nname = \"t\"\nauth = \"trust\"\nadmin = \"hun\\\"ter2\"\n").unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, UsersError::Parse { line: 4, .. }), "{err:?}");
    assert!(message.contains("expected a boolean"), "{message}");
    assert!(!message.contains("hun") && !message.contains("ter2"), "{message}");
}

#[test]
fn missing_file_is_a_read_error() {
    let err = Users::load(Path::new("/nonexistent/meridian/users.toml")).unwrap_err();
    assert!(matches!(err, UsersError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/meridian/users.toml"));
}

#[test]
fn debug_never_prints_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "file-backend-pw\n").unwrap();
    let scram = scram_secret();
    let verifier: ScramVerifier = scram.parse().unwrap();
    let (_, keys) = scram.rsplit_once('$').unwrap();
    let (stored_key, server_key) = keys.split_once(':').unwrap();
    let md5_secret = "md553f48b7c4b76a86ce72276c5755f217d";
    let text = format!(
        r#"
[[user]]
name = "app"
secret = "{scram}"
backend_password = "inline-backend-pw"

[[user]]
name = "old"
auth = "md5"
secret = "{md5_secret}"
backend_password_file = "pw"
"#
    );
    let raw: super::users::RawUsers = toml::from_str(&text).unwrap();
    let raw_debug = format!("{raw:?}");
    let users = Users::parse(&text, &dir.path().join("users.toml")).unwrap();
    let secret = Secret::new("plain-secret");
    let outputs = [
        raw_debug,
        format!("{users:?}"),
        format!("{users:#?}"),
        format!("{:?}", users.get("app").unwrap()),
        format!("{:?}", users.get("old").unwrap()),
        format!("{verifier:?}"),
        format!("{secret:?}"),
        format!("{secret}"),
    ];
    for out in &outputs {
        for needle in [
            "inline-backend-pw",
            "file-backend-pw",
            "plain-secret",
            stored_key,
            server_key,
            md5_secret,
            &md5_secret[3..],
        ] {
            assert!(!out.contains(needle), "{out} leaks {needle}");
        }
    }
    assert_eq!(format!("{secret:?}"), "***");
    assert_eq!(format!("{secret}"), "***");
    assert!(outputs[3].contains("app"), "names are fine to show");
}

#[test]
fn pool_mode_and_auth_method_spellings() {
    assert_eq!(PoolMode::Transaction.to_string(), "transaction");
    assert_eq!(PoolMode::Session.to_string(), "session");
    assert_eq!(PoolMode::default(), PoolMode::Transaction);
    assert_eq!(AuthMethod::ScramSha256.to_string(), "scram-sha-256");
    assert_eq!(AuthMethod::Md5.to_string(), "md5");
    assert_eq!(AuthMethod::Trust.to_string(), "trust");
}

#[test]
fn cluster_users_replace_file_users_but_keep_backend_passwords() {
    use consensus::state::{UserAuth, UserRecord};
    let file = parse(&format!(
        "[[user]]\nname = \"app\"\nsecret = \"{}\"\nbackend_password = \"backend-pw\"\n[[user]]\nname = \"ops\"\nauth = \"trust\"\n",
        scram_secret()
    ))
    .unwrap();
    let mut records = std::collections::BTreeMap::new();
    let md5 = "md5".to_owned() + &"0f".repeat(16);
    let record = |name: &str, auth, secret: Option<&str>, admin| UserRecord {
        name: name.into(),
        auth,
        secret: secret.map(str::to_owned),
        admin,
        pool_mode: Some("session".into()),
    };
    records.insert("app".to_owned(), record("app", UserAuth::Md5, Some(&md5), true));
    records.insert("new".to_owned(), record("new", UserAuth::Trust, None, false));
    records.insert("broken".to_owned(), record("broken", UserAuth::ScramSha256, Some("SCRAM-SHA-256$nope"), false));
    let merged = file.with_cluster_users(&records);
    let app = merged.get("app").unwrap();
    assert_eq!(app.credential, Credential::Md5(md5));
    assert!(app.admin);
    assert_eq!(app.pool_mode, Some(PoolMode::Session));
    assert_eq!(app.backend_password.as_ref().map(|s| s.expose()), Some("backend-pw"));
    assert_eq!(merged.get("new").unwrap().credential, Credential::Trust);
    assert!(merged.get("ops").is_some(), "file users stay");
    assert!(merged.get("broken").is_none(), "an unusable secret is left out");
}
