//! SCRAM tests. Interop is proven against postgres-protocol's client (what
//! tokio-postgres uses) and its verifier generator, plus the RFC 7677 vector.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use super::AuthError;
use super::scram::{DEFAULT_ITERATIONS, MockSecret, ScramExchange, ScramVerifier, VerifierError};

/// Drives `server` with postgres-protocol's client; returns the server's error
/// or, on success, whether the client accepted our server-final message.
fn run(server: &mut ScramExchange, password: &str, channel_binding: ChannelBinding) -> Result<(), AuthError> {
    let mut client = ScramSha256::new(password.as_bytes(), channel_binding);
    let server_first = server.client_first(client.message())?;
    client.update(&server_first).expect("client accepts our server-first message");
    let server_final = server.client_final(client.message())?;
    client.finish(&server_final).expect("client accepts our server signature");
    Ok(())
}

fn pg_verifier(password: &str) -> ScramVerifier {
    postgres_protocol::password::scram_sha_256(password.as_bytes()).parse().expect("postgres-protocol verifier parses")
}

#[test]
fn verifier_round_trips_postgres_format() {
    let text = postgres_protocol::password::scram_sha_256(b"hunter2");
    let verifier: ScramVerifier = text.parse().unwrap();
    assert_eq!(verifier.to_string(), text);
    assert_eq!(verifier.iterations(), 4096);
    assert_eq!(verifier.salt().len(), 16);
    let again: ScramVerifier = verifier.to_string().parse().unwrap();
    assert_eq!(again, verifier);
}

#[test]
fn generate_matches_postgres_protocol_under_the_same_salt() {
    for password in ["hunter2", "", "pässwörd", "tab\there", "\u{1F600} emoji"] {
        let reference = pg_verifier(password);
        let ours = ScramVerifier::generate(password, reference.salt(), reference.iterations()).unwrap();
        assert_eq!(ours, reference, "{password:?}");
        assert_eq!(ours.to_string(), reference.to_string());
    }
}

#[test]
fn generated_verifier_authenticates_real_client() {
    let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let verifier = ScramVerifier::generate("pencil", &salt, 4096).unwrap();
    // Same salt through our derivation and the generated-by-client path must
    // authenticate with the real client.
    let mut server = ScramExchange::new(verifier.clone());
    run(&mut server, "pencil", ChannelBinding::unsupported()).unwrap();
    // Text form survives a round trip.
    assert_eq!(verifier.to_string().parse::<ScramVerifier>().unwrap(), verifier);
}

#[test]
fn rfc_7677_exchange_vector() {
    // RFC 7677 section 3, user "user", password "pencil".
    let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let verifier = ScramVerifier::generate("pencil", &salt, 4096).unwrap();
    let mut server = ScramExchange::with_nonce(verifier, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
    let server_first = server.client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
    assert_eq!(server_first, b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
    let server_final = server
        .client_final(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        )
        .unwrap();
    assert_eq!(server_final, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
}

#[test]
fn correct_password_with_n_and_y_headers() {
    for cb in [ChannelBinding::unsupported(), ChannelBinding::unrequested()] {
        let mut server = ScramExchange::new(pg_verifier("correct horse"));
        run(&mut server, "correct horse", cb).unwrap();
    }
}

#[test]
fn wrong_password_fails() {
    let mut server = ScramExchange::new(pg_verifier("correct horse"));
    let err = run(&mut server, "battery staple", ChannelBinding::unsupported()).unwrap_err();
    assert_eq!(err, AuthError::WrongPassword);
}

#[test]
fn exchange_ends_after_success_or_failure() {
    let mut server = ScramExchange::new(pg_verifier("pw"));
    run(&mut server, "pw", ChannelBinding::unsupported()).unwrap();
    assert!(matches!(server.client_final(b"c=biws,r=x,p=x"), Err(AuthError::OutOfOrder(_))));
    assert!(matches!(server.client_first(b"n,,n=,r=abc"), Err(AuthError::OutOfOrder(_))));

    let mut server = ScramExchange::new(pg_verifier("pw"));
    run(&mut server, "nope", ChannelBinding::unsupported()).unwrap_err();
    assert!(matches!(server.client_final(b"c=biws,r=x,p=x"), Err(AuthError::OutOfOrder(_))));
}

#[test]
fn non_ascii_passwords_interoperate() {
    // Already normalized: SASLprep keeps it, so `generate` accepts it.
    let salt = [7u8; 16];
    let verifier = ScramVerifier::generate("pässwörd", &salt, 4096).unwrap();
    run(&mut ScramExchange::new(verifier), "pässwörd", ChannelBinding::unsupported()).unwrap();

    // Fullwidth letters and a non-ASCII space change under SASLprep (NFKC):
    // `generate` refuses rather than store a verifier libpq would not match,
    // while `from_password` normalizes like PostgreSQL does.
    let tricky = "ｐａｓｓ\u{00A0}word";
    assert_eq!(ScramVerifier::generate(tricky, &salt, 4096), Err(VerifierError::NeedsSaslprep));
    let verifier = ScramVerifier::from_password(tricky);
    run(&mut ScramExchange::new(verifier.clone()), tricky, ChannelBinding::unsupported()).unwrap();
    // ... and the client normalizes too, so the NFKC form works as well.
    run(&mut ScramExchange::new(verifier), "pass word", ChannelBinding::unsupported()).unwrap();
}

#[test]
fn ascii_control_characters_use_raw_bytes() {
    // SASLprep prohibits them, so PostgreSQL and libpq hash the raw bytes.
    let password = "tab\there";
    let verifier = ScramVerifier::generate(password, b"salt", 4096).unwrap();
    run(&mut ScramExchange::new(verifier), password, ChannelBinding::unsupported()).unwrap();
}

#[test]
fn generate_rejects_bad_parameters() {
    assert_eq!(ScramVerifier::generate("pw", b"salt", 0), Err(VerifierError::Iterations));
    assert_eq!(ScramVerifier::generate("pw", b"", 4096), Err(VerifierError::Salt));
}

#[test]
fn verifier_parse_errors() {
    let good = pg_verifier("pw").to_string();
    let (_, rest) = good.split_once('$').unwrap();
    let (params, keys) = rest.split_once('$').unwrap();
    let (_, salt) = params.split_once(':').unwrap();
    let (stored, server) = keys.split_once(':').unwrap();
    let cases: Vec<(String, VerifierError)> = vec![
        ("".into(), VerifierError::Format),
        ("md5abc".into(), VerifierError::Format),
        (format!("SCRAM-SHA-256$4096:{salt}"), VerifierError::Format),
        (format!("SCRAM-SHA-256$4096{salt}${keys}"), VerifierError::Format),
        (format!("SCRAM-SHA-256$4096:{salt}${stored}{server}"), VerifierError::Format),
        (format!("SCRAM-SHA-1$4096:{salt}${keys}"), VerifierError::Scheme),
        (format!("scram-sha-256$4096:{salt}${keys}"), VerifierError::Scheme),
        (format!("SCRAM-SHA-256$0:{salt}${keys}"), VerifierError::Iterations),
        (format!("SCRAM-SHA-256$-1:{salt}${keys}"), VerifierError::Iterations),
        (format!("SCRAM-SHA-256$+4096:{salt}${keys}"), VerifierError::Iterations),
        (format!("SCRAM-SHA-256$99999999999:{salt}${keys}"), VerifierError::Iterations),
        (format!("SCRAM-SHA-256$:{salt}${keys}"), VerifierError::Iterations),
        (format!("SCRAM-SHA-256$4096:${keys}"), VerifierError::Salt),
        (format!("SCRAM-SHA-256$4096:not*base64${keys}"), VerifierError::Salt),
        (format!("SCRAM-SHA-256$4096:{salt}$AAAA:{server}"), VerifierError::StoredKey),
        (format!("SCRAM-SHA-256$4096:{salt}${stored}:AAAA"), VerifierError::ServerKey),
        (format!("SCRAM-SHA-256$4096:{salt}${stored}:{server}$x"), VerifierError::ServerKey),
        (format!("SCRAM-SHA-256$4096:{salt}${stored}:{server}:x"), VerifierError::ServerKey),
    ];
    for (text, expected) in cases {
        assert_eq!(text.parse::<ScramVerifier>(), Err(expected), "{text}");
    }
}

#[test]
fn debug_hides_keys() {
    let verifier = pg_verifier("pw");
    let text = verifier.to_string();
    let (_, keys) = text.rsplit_once('$').unwrap();
    let (stored, server) = keys.split_once(':').unwrap();
    for debug in [
        format!("{verifier:?}"),
        format!("{verifier:#?}"),
        format!("{:?}", ScramExchange::new(verifier.clone())),
        format!("{:?}", MockSecret::from_bytes([0x41; 32])),
    ] {
        assert!(!debug.contains(stored), "{debug}");
        assert!(!debug.contains(server), "{debug}");
        assert!(!debug.contains("QUFB"), "{debug}"); // base64 of the mock secret bytes
        assert!(!debug.contains("65, 65"), "{debug}");
    }
}

#[test]
fn mock_exchange_fails_like_a_wrong_password() {
    let secret = MockSecret::random();
    let mut mock = ScramExchange::mock("ghost", &secret);
    let mock_err = run(&mut mock, "anything", ChannelBinding::unsupported()).unwrap_err();

    let mut real = ScramExchange::new(pg_verifier("right"));
    let real_err = run(&mut real, "wrong", ChannelBinding::unsupported()).unwrap_err();

    assert_eq!(mock_err, AuthError::WrongPassword);
    assert_eq!(mock_err, real_err);
    assert_eq!(mock_err.to_string(), real_err.to_string());
}

/// Splits a server-first message into (nonce, salt, iterations).
fn server_first_fields(message: &[u8]) -> (String, Vec<u8>, u32) {
    let text = std::str::from_utf8(message).unwrap();
    let mut parts = text.split(',');
    let nonce = parts.next().unwrap().strip_prefix("r=").unwrap().to_owned();
    let salt = parts.next().unwrap().strip_prefix("s=").unwrap();
    let iterations = parts.next().unwrap().strip_prefix("i=").unwrap();
    assert!(parts.next().is_none());
    (nonce, STANDARD.decode(salt).unwrap(), iterations.parse().unwrap())
}

#[test]
fn mock_server_first_looks_real_and_is_stable() {
    let secret = MockSecret::random();
    let first = |ex: &mut ScramExchange| ex.client_first(b"n,,n=,r=clientnonce").unwrap();

    let (real_nonce, real_salt, real_iter) = server_first_fields(&first(&mut ScramExchange::new(pg_verifier("pw"))));
    let (mock_nonce, mock_salt, mock_iter) = server_first_fields(&first(&mut ScramExchange::mock("ghost", &secret)));
    assert_eq!(mock_nonce.len(), real_nonce.len());
    assert_eq!(mock_salt.len(), real_salt.len());
    assert_eq!(mock_iter, real_iter);
    assert_eq!(mock_iter, DEFAULT_ITERATIONS);

    // Same user, same secret: same salt on every attempt (a changing salt
    // would give the mock away); the nonce still changes.
    let (again_nonce, again_salt, _) = server_first_fields(&first(&mut ScramExchange::mock("ghost", &secret)));
    assert_eq!(again_salt, mock_salt);
    assert_ne!(again_nonce, mock_nonce);

    // Other user or other secret: another salt.
    let (_, other_user_salt, _) = server_first_fields(&first(&mut ScramExchange::mock("ghost2", &secret)));
    assert_ne!(other_user_salt, mock_salt);
    let (_, other_secret_salt, _) =
        server_first_fields(&first(&mut ScramExchange::mock("ghost", &MockSecret::random())));
    assert_ne!(other_secret_salt, mock_salt);
}

#[test]
fn mock_rejects_malformed_messages_like_a_real_exchange() {
    let secret = MockSecret::random();
    let mut real = ScramExchange::new(pg_verifier("pw"));
    let mut mock = ScramExchange::mock("ghost", &secret);
    assert_eq!(real.client_first(b"n,,n=,r=abc,1"), mock.client_first(b"n,,n=,r=abc,1"));
}

#[test]
fn channel_binding_required_by_client_is_rejected() {
    let mut server = ScramExchange::new(pg_verifier("pw"));
    let client = ScramSha256::new(b"pw", ChannelBinding::tls_server_end_point(vec![1, 2, 3]));
    assert!(matches!(server.client_first(client.message()), Err(AuthError::Malformed(_))));
}

#[test]
fn malformed_client_first_messages() {
    let long = format!("n,,n=,r={}", "a".repeat(2000));
    type Check = fn(&AuthError) -> bool;
    let cases: &[(&[u8], Check)] = &[
        (b"", |e| matches!(e, AuthError::Malformed(_))),
        (b"p=tls-server-end-point,,n=,r=abc", |e| matches!(e, AuthError::Malformed(_))),
        (b"x,,n=,r=abc", |e| matches!(e, AuthError::Malformed(_))),
        (b"n", |e| matches!(e, AuthError::Malformed(_))),
        (b"n;,n=,r=abc", |e| matches!(e, AuthError::Malformed(_))),
        (b"n,a=bob,n=,r=abc", |e| matches!(e, AuthError::Unsupported(_))),
        (b"n,x,n=,r=abc", |e| matches!(e, AuthError::Malformed(_))),
        (b"n,,m=ext,n=,r=abc", |e| matches!(e, AuthError::Unsupported(_))),
        (b"n,,r=abc", |e| matches!(e, AuthError::Malformed(_))),
        (b"n,,n=", |e| matches!(e, AuthError::Malformed(_))),
        (b"n,,n=,r=", |e| matches!(e, AuthError::Malformed(_))),
        (b"n,,n=,x=abc", |e| matches!(e, AuthError::Malformed(_))),
        (b"n,,n=,r=ab\x7fc", |e| matches!(e, AuthError::Malformed(_))),
        (b"n,,n=,r=ab c", |e| matches!(e, AuthError::Malformed(_))),
        (b"n,,n=,r=abc,1=x", |e| matches!(e, AuthError::Malformed(_))),
        (b"n,,n=,r=abc,xy", |e| matches!(e, AuthError::Malformed(_))),
        (b"n,,n=,r=abc\0", |e| matches!(e, AuthError::Malformed(_))),
        (long.as_bytes(), |e| matches!(e, AuthError::Malformed(_))),
    ];
    for (message, check) in cases {
        let mut server = ScramExchange::new(pg_verifier("pw"));
        let err = server.client_first(message).unwrap_err();
        assert!(check(&err), "{:?}: {err:?}", String::from_utf8_lossy(message));
        // Any error ends the exchange.
        assert!(matches!(server.client_first(b"n,,n=,r=abc"), Err(AuthError::OutOfOrder(_))));
    }
}

#[test]
fn accepted_client_first_variants() {
    // User name ignored (any value), optional extensions skipped, trailing
    // comma tolerated as PostgreSQL's tokenizer does.
    for message in
        [&b"n,,n=,r=abc"[..], b"y,,n=,r=abc", b"n,,n=someone else,r=abc", b"n,,n=,r=abc,x=ext,y=more", b"n,,n=,r=abc,"]
    {
        let mut server = ScramExchange::with_nonce(pg_verifier("pw"), "SERVER");
        let first = server.client_first(message).unwrap();
        assert!(first.starts_with(b"r=abcSERVER,s="), "{first:?}");
    }
}

#[test]
fn client_final_before_client_first_is_out_of_order() {
    let mut server = ScramExchange::new(pg_verifier("pw"));
    assert!(matches!(server.client_final(b"c=biws,r=abc,p=AAAA"), Err(AuthError::OutOfOrder(_))));
}

/// Runs the real client to get a valid client-final message for a server in
/// state AwaitingClientFinal, so each case can tamper with one part.
fn valid_final(cb: ChannelBinding) -> (ScramExchange, String) {
    let mut server = ScramExchange::new(pg_verifier("pw"));
    let mut client = ScramSha256::new(b"pw", cb);
    let first = server.client_first(client.message()).unwrap();
    client.update(&first).unwrap();
    (server, String::from_utf8(client.message().to_vec()).unwrap())
}

#[test]
fn malformed_client_final_messages() {
    type Tamper = fn(&str) -> String;
    let tampers: &[(&str, Tamper)] = &[
        ("untouched", |m| m.to_owned()),
        ("wrong channel-binding echo", |m| m.replacen("c=biws", "c=eSws", 1)),
        ("channel binding missing", |m| m.replacen("c=biws,", "", 1)),
        ("nonce changed", |m| m.replacen(",r=", ",r=X", 1)),
        ("nonce truncated", |m| {
            let (head, proof) = m.rsplit_once(",p=").unwrap();
            format!("{},p={proof}", &head[..head.len() - 1])
        }),
        ("proof missing", |m| m.rsplit_once(",p=").unwrap().0.to_owned()),
        ("proof not base64", |m| format!("{},p=!!!!", m.rsplit_once(",p=").unwrap().0)),
        ("proof too short", |m| format!("{},p=AAAA", m.rsplit_once(",p=").unwrap().0)),
        ("garbage after proof", |m| format!("{m},x=1")),
        ("empty", |_| String::new()),
    ];
    for (name, tamper) in tampers {
        let (mut server, message) = valid_final(ChannelBinding::unsupported());
        let result = server.client_final(tamper(&message).as_bytes());
        if *name == "untouched" {
            assert!(result.is_ok(), "{name}: {result:?}");
        } else {
            assert!(matches!(result, Err(AuthError::Malformed(_))), "{name}: {result:?}");
        }
    }
}

#[test]
fn y_header_must_be_echoed_as_esws() {
    let (mut server, message) = valid_final(ChannelBinding::unrequested());
    assert!(message.starts_with("c=eSws,"));
    let swapped = message.replacen("c=eSws", "c=biws", 1);
    assert!(matches!(server.client_final(swapped.as_bytes()), Err(AuthError::Malformed(_))));
}

#[test]
fn extensions_before_proof_are_part_of_the_signed_message() {
    // An extension the client did not sign changes the AuthMessage, so the
    // proof no longer verifies: wrong password, not malformed.
    let (mut server, message) = valid_final(ChannelBinding::unsupported());
    let (head, proof) = message.rsplit_once(",p=").unwrap();
    let with_ext = format!("{head},x=ext,p={proof}");
    assert_eq!(server.client_final(with_ext.as_bytes()), Err(AuthError::WrongPassword));
}

#[test]
fn make_secret_outputs_parse_and_authenticate() {
    use super::{SecretKind, make_secret, md5};
    let scram = make_secret(SecretKind::ScramSha256, "app", "s3cret");
    let verifier: ScramVerifier = scram.parse().unwrap();
    run(&mut ScramExchange::new(verifier), "s3cret", ChannelBinding::unsupported()).unwrap();
    let md5_secret = make_secret(SecretKind::Md5, "app", "s3cret");
    assert_eq!(md5_secret, postgres_protocol::password::md5(b"s3cret", "app"));
    assert!(md5::is_secret(&md5_secret));
    assert_eq!("md5".parse::<SecretKind>(), Ok(SecretKind::Md5));
    assert_eq!("scram-sha-256".parse::<SecretKind>(), Ok(SecretKind::ScramSha256));
    assert!("trust".parse::<SecretKind>().is_err());
}
