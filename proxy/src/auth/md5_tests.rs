//! md5 tests against postgres-protocol and a vector computed by hand
//! (Python `hashlib`).

use ::md5::{Digest, Md5};

use super::md5::{is_secret, random_salt, secret, verify};

/// What a client sends: "md5" + hex(md5(hex(md5(password ++ user)) ++ salt)).
fn client_response(user: &str, password: &str, salt: [u8; 4]) -> String {
    let stored = postgres_protocol::password::md5(password.as_bytes(), user);
    let digest = Md5::new().chain_update(&stored.as_bytes()[3..]).chain_update(salt).finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("md5{hex}")
}

#[test]
fn secret_matches_postgres_protocol() {
    for (user, password) in [("postgres", "secret"), ("app", ""), ("ü", "pässwörd")] {
        assert_eq!(secret(user, password), postgres_protocol::password::md5(password.as_bytes(), user));
    }
}

#[test]
fn hand_computed_vector() {
    // md5("secretpostgres") and md5("53f4...217d" ++ [1, 2, 3, 4]).
    let stored = secret("postgres", "secret");
    assert_eq!(stored, "md553f48b7c4b76a86ce72276c5755f217d");
    assert!(verify(&stored, [1, 2, 3, 4], b"md5bb41a296aab6baccb36ff243a562abff"));
    // With the C string terminator still attached.
    assert!(verify(&stored, [1, 2, 3, 4], b"md5bb41a296aab6baccb36ff243a562abff\0"));
}

#[test]
fn verify_against_client_computation() {
    let salt = random_salt();
    let stored = secret("app", "correct horse");
    assert!(verify(&stored, salt, client_response("app", "correct horse", salt).as_bytes()));
    // Wrong password, wrong user, wrong salt.
    assert!(!verify(&stored, salt, client_response("app", "battery staple", salt).as_bytes()));
    assert!(!verify(&stored, salt, client_response("other", "correct horse", salt).as_bytes()));
    let other_salt = [salt[0] ^ 1, salt[1], salt[2], salt[3]];
    assert!(!verify(&stored, other_salt, client_response("app", "correct horse", salt).as_bytes()));
}

#[test]
fn malformed_inputs_never_verify() {
    let stored = secret("postgres", "secret");
    let good = b"md5bb41a296aab6baccb36ff243a562abff";
    for response in [
        &b""[..],
        b"md5",
        b"bb41a296aab6baccb36ff243a562abff",
        b"MD5bb41a296aab6baccb36ff243a562abff",
        b"md5BB41A296AAB6BACCB36FF243A562ABFF",
        b"md5bb41a296aab6baccb36ff243a562abff\0\0",
        b"md5bb41a296aab6baccb36ff243a562abf",
    ] {
        assert!(!verify(&stored, [1, 2, 3, 4], response), "{response:?}");
    }
    // A stored secret that is not md5 + 32 lowercase hex never verifies, even
    // if the client computed a response from it.
    for bad in [
        "",
        "53f48b7c4b76a86ce72276c5755f217d",
        "md553F48B7C4B76A86CE72276C5755F217D",
        "md553f48b7c4b76a86ce72276c5755f217",
        "md553f48b7c4b76a86ce72276c5755f217dd",
        "md553f48b7c4b76a86ce72276c5755f217g",
    ] {
        assert!(!is_secret(bad), "{bad}");
        assert!(!verify(bad, [1, 2, 3, 4], good), "{bad}");
    }
    assert!(is_secret(&stored));
}
