//! DKIM signatures checked by an independent verifier: dkimpy
//! (`shared/testkit/dkim_verify.py`) against the DNS record `DkimSigner::dns_record`
//! gives, with keys made by `openssl genpkey` as the book says. A signature verifies;
//! altering a signed header or the body, adding a signed header, or verifying against
//! another key's record fails. One signed message goes through the real SMTP test
//! server and verifies as received.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Smtp, free_port};
use harness::dkim::{openssl_key, openssl_public_key, verifies, without_envelope_line};
use lettre::Message;
use lettre::message::header::{self, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use shared::config::{DkimAlgorithm, DkimConfig};
use worker::dkim::DkimSigner;
use worker::smtp::{SmtpClient, SmtpSettings};

const UNSUBSCRIBE: &str =
    "<https://conveyor.example/api/v1/unsubscribe/tok_4f1c2a9e8b7d6c5e4f3a2b1c0d9e8f7a>";

fn signer(pem: &str, selector: &str) -> DkimSigner {
    let config = DkimConfig::new("conveyor.example", selector, pem).expect("a valid key");
    DkimSigner::new(&config).expect("the signer")
}

fn raw(name: &'static str, value: &str) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value.to_owned())
}

/// A campaign message as the mailer builds one: text only, or text and HTML.
fn campaign_message(html: bool) -> Message {
    let builder = Message::builder()
        .from(
            "Conveyor <no-reply@conveyor.example>"
                .parse::<Mailbox>()
                .expect("from"),
        )
        .to("Ada Lovelace <ada@example.org>".parse().expect("to"))
        .subject("Spring news: what's new in Conveyor — ünïcödé")
        .message_id(Some(format!("<{}@conveyor>", uuid::Uuid::new_v4())))
        .header(header::MIME_VERSION_1_0)
        .raw_header(raw("List-Unsubscribe", UNSUBSCRIBE))
        .raw_header(raw("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"));
    let text = "Hello Ada,\n\nThe spring release is out.  Details:\thttps://conveyor.example/news\n\n-- \nConveyor\n";
    let built = if html {
        builder.multipart(MultiPart::alternative_plain_html(
            text.to_owned(),
            "<p>Hello Ada,</p><p>The spring release is <b>out</b>.</p>".to_owned(),
        ))
    } else {
        builder
            .header(header::ContentType::TEXT_PLAIN)
            .body(text.to_owned())
    };
    built.expect("the message builds")
}

/// `message` with the first line starting with `prefix` replaced by `line`.
fn replace_header(message: &[u8], prefix: &str, line: &str) -> Vec<u8> {
    let text = String::from_utf8(message.to_vec()).expect("ASCII message");
    let start = text
        .find(&format!("\r\n{prefix}"))
        .expect("the header is there")
        + 2;
    let mut end = start + text[start..].find("\r\n").expect("line end");
    while text[end + 2..].starts_with([' ', '\t']) {
        end = end + 2 + text[end + 2..].find("\r\n").expect("line end");
    }
    format!("{}{line}{}", &text[..start], &text[end..]).into_bytes()
}

fn insert_after_signature(message: &[u8], line: &str) -> Vec<u8> {
    let text = String::from_utf8(message.to_vec()).expect("ASCII message");
    let at = text.find("\r\n\r\n").expect("end of headers") + 2;
    format!("{}{line}\r\n{}", &text[..at], &text[at..]).into_bytes()
}

#[test]
fn signatures_verify_and_any_change_to_what_is_signed_breaks_them() {
    for algorithm in [DkimAlgorithm::Rsa, DkimAlgorithm::Ed25519] {
        let signer = signer(&openssl_key(algorithm), "s2025");
        let record = signer.dns_record();
        for html in [false, true] {
            let what = format!("{algorithm:?}, html {html}");
            let signed = signer.signed(&campaign_message(html));
            let text = String::from_utf8_lossy(&signed);
            assert!(text.starts_with("DKIM-Signature: v=1;"), "{what}: {text}");
            let a = format!("a={};", algorithm.signature_tag());
            assert!(text.contains(&a), "{what}: {text}");
            assert!(
                text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
                "{what}"
            );
            assert!(
                verifies(&signed, &record),
                "{what}: a fresh signature verifies"
            );

            let altered_unsubscribe = replace_header(
                &signed,
                "List-Unsubscribe:",
                "List-Unsubscribe: <https://evil.example/api/v1/unsubscribe/x>",
            );
            assert!(
                !verifies(&altered_unsubscribe, &record),
                "{what}: List-Unsubscribe altered"
            );
            let altered_post = replace_header(
                &signed,
                "List-Unsubscribe-Post:",
                "List-Unsubscribe-Post: List-Unsubscribe=Two-Clicks",
            );
            assert!(
                !verifies(&altered_post, &record),
                "{what}: List-Unsubscribe-Post altered"
            );
            let altered_subject = replace_header(&signed, "Subject:", "Subject: You won a prize");
            assert!(
                !verifies(&altered_subject, &record),
                "{what}: Subject altered"
            );
            let altered_type = replace_header(
                &signed,
                "Content-Type:",
                "Content-Type: text/html; charset=utf-8",
            );
            assert!(
                !verifies(&altered_type, &record),
                "{what}: Content-Type altered"
            );

            let mut altered_body = signed.clone();
            let at = text.find("spring release").expect("body text") + 1;
            altered_body[at] = b'P';
            assert!(
                !verifies(&altered_body, &record),
                "{what}: a body byte altered"
            );

            // Signed headers are oversigned: adding one breaks the signature too.
            let added = insert_after_signature(&signed, "Reply-To: Mallory <mallory@evil.example>");
            assert!(!verifies(&added, &record), "{what}: a Reply-To added");

            // Relaxed canonicalization: whitespace changes in transit are harmless.
            let spaced = String::from_utf8_lossy(&signed).replacen(
                "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                "List-Unsubscribe-Post:   \t List-Unsubscribe=One-Click  ",
                1,
            );
            assert!(
                verifies(spaced.as_bytes(), &record),
                "{what}: whitespace is canonicalized away"
            );
        }
    }
}

#[test]
fn a_signature_does_not_verify_against_another_keys_record() {
    for algorithm in [DkimAlgorithm::Rsa, DkimAlgorithm::Ed25519] {
        let ours = signer(&openssl_key(algorithm), "s1");
        let other = signer(&openssl_key(algorithm), "s1");
        let signed = ours.signed(&campaign_message(true));
        assert!(verifies(&signed, &ours.dns_record()), "{algorithm:?}");
        assert!(
            !verifies(&signed, &other.dns_record()),
            "{algorithm:?}: another key's record"
        );
        // The record must be published under the signature's selector and domain.
        let (_, value) = ours.dns_record();
        let elsewhere = ("s2._domainkey.conveyor.example".to_owned(), value);
        assert!(
            !verifies(&signed, &elsewhere),
            "{algorithm:?}: another name"
        );
    }
    // An RSA signature against an Ed25519 record.
    let rsa = signer(&openssl_key(DkimAlgorithm::Rsa), "s1");
    let ed = signer(&openssl_key(DkimAlgorithm::Ed25519), "s1");
    assert!(!verifies(
        &rsa.signed(&campaign_message(false)),
        &ed.dns_record()
    ));
}

#[test]
fn the_dns_record_publishes_the_public_key_openssl_derives() {
    for (algorithm, k) in [
        (DkimAlgorithm::Rsa, "rsa"),
        (DkimAlgorithm::Ed25519, "ed25519"),
    ] {
        let pem = openssl_key(algorithm);
        let (name, value) = signer(&pem, "mail2025").dns_record();
        assert_eq!(name, "mail2025._domainkey.conveyor.example");
        assert_eq!(
            value,
            format!("v=DKIM1; k={k}; p={}", openssl_public_key(&pem, algorithm))
        );
    }
}

#[tokio::test]
async fn a_signed_message_verifies_as_the_smtp_server_received_it() {
    let smtp = Smtp::start(free_port(), &[]).await;
    let client = SmtpClient::new(
        SmtpSettings::from_url(
            &format!("smtp://127.0.0.1:{}", smtp.port),
            Duration::from_secs(10),
        )
        .expect("url"),
        1,
    );
    let signer = signer(&openssl_key(DkimAlgorithm::Rsa), "s2025");
    let message = campaign_message(true);
    client
        .send(message.envelope(), &signer.signed(&message))
        .await
        .expect("sent");
    smtp.wait_for_messages(1, Duration::from_secs(10)).await;
    let eml = std::fs::read_dir(&smtp.dir)
        .expect("the server's directory")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "eml"))
        .expect("one .eml");
    let received = std::fs::read(eml).expect("read the .eml");
    assert!(received.starts_with(b"X-Envelope-To: ada@example.org\r\n"));
    let received = without_envelope_line(&received);
    assert!(received.starts_with(b"DKIM-Signature: "));
    assert!(verifies(received, &signer.dns_record()), "as received");
}

#[test]
fn signing_cost_per_message() {
    for algorithm in [DkimAlgorithm::Rsa, DkimAlgorithm::Ed25519] {
        let signer = signer(&openssl_key(algorithm), "s1");
        let message = campaign_message(true);
        let rounds = 200;
        let started = Instant::now();
        for _ in 0..rounds {
            assert!(!signer.signed(&message).is_empty());
        }
        let each = started.elapsed() / rounds;
        println!("signing one multipart message ({algorithm:?}): {each:?}");
        assert!(each < Duration::from_millis(100), "{algorithm:?}: {each:?}");
    }
}

fn worker_binary(vars: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_worker"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir())
        .envs([
            ("APP_ENV", "production"),
            ("PII_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
            (
                "BLIND_INDEX_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
            ("PUBLIC_URL", "https://api.conveyor.example"),
        ])
        .arg("dkim-record");
    for (key, value) in vars {
        command.env(key, value);
    }
    command.output().expect("the worker runs")
}

#[test]
fn worker_dkim_record_prints_the_record_or_says_dkim_is_not_configured() {
    let pem = openssl_key(DkimAlgorithm::Ed25519);
    let (name, value) = signer(&pem, "s9").dns_record();
    let out = worker_binary(&[
        ("DKIM_DOMAIN", "conveyor.example"),
        ("DKIM_SELECTOR", "s9"),
        ("DKIM_PRIVATE_KEY", &pem.replace('\n', "\\n")),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("text");
    assert!(stdout.contains(&format!("name:  {name}\n")), "{stdout}");
    assert!(stdout.contains(&format!("value: {value}\n")), "{stdout}");
    assert!(
        stdout.contains(&format!("zone:  {name}. IN TXT ( \"{value}\" )")),
        "{stdout}"
    );

    let out = worker_binary(&[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).expect("text");
    assert!(stderr.contains("DKIM is not configured"), "{stderr}");

    let out = worker_binary(&[("DKIM_DOMAIN", "conveyor.example")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).expect("text");
    assert!(
        stderr.contains("configuration error: DKIM_SELECTOR is invalid"),
        "{stderr}"
    );
}
