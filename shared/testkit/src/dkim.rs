//! DKIM in tests: keys made by the `openssl` CLI (as the book says to make them) and
//! an independent verifier, dkimpy (`shared/testkit/dkim_verify.py`), run against a
//! record the test gives instead of DNS. `scripts/services ensure_dkim_verifier`
//! installs both.

use std::io::Write as _;
use std::process::{Command, Stdio};

use base64::Engine as _;
use shared::config::DkimAlgorithm;

use crate::workspace;

/// A private key in PEM, as `openssl genpkey` writes it (PKCS#8): RSA-2048 or Ed25519.
pub fn openssl_key(algorithm: DkimAlgorithm) -> String {
    let args: &[&str] = match algorithm {
        DkimAlgorithm::Rsa => &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        DkimAlgorithm::Ed25519 => &["genpkey", "-algorithm", "ed25519"],
    };
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl CLI runs (scripts/services ensure_dkim_verifier installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("PEM is text")
}

/// The `p=` value openssl derives from a private key: the DER SubjectPublicKeyInfo for
/// RSA, the raw 32-byte key (the DER's last 32 bytes) for Ed25519, in base64.
pub fn openssl_public_key(pem: &str, algorithm: DkimAlgorithm) -> String {
    let out = piped(
        Command::new("openssl").args(["pkey", "-pubout", "-outform", "DER"]),
        pem.as_bytes(),
    );
    assert!(out.status.success(), "openssl pkey fails");
    let der = match algorithm {
        DkimAlgorithm::Rsa => &out.stdout[..],
        DkimAlgorithm::Ed25519 => &out.stdout[out.stdout.len() - 32..],
    };
    base64::engine::general_purpose::STANDARD.encode(der)
}

/// Whether dkimpy finds the message's (first) DKIM signature valid against `record`
/// (`v=DKIM1; k=...; p=...`) published under `name` (`selector._domainkey.domain`);
/// a lookup of any other name finds nothing.
pub fn verifies(message: &[u8], (name, record): &(String, String)) -> bool {
    let out = piped(
        Command::new("python3")
            .arg(workspace().join("shared/testkit/dkim_verify.py"))
            .args([record, name])
            .env("PYTHONPATH", workspace().join(".dev/py")),
        message,
    );
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!(
            "dkim_verify.py did not run (scripts/services ensure_dkim_verifier installs \
             dkimpy): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// A message as the test SMTP server stored it, without the `X-Envelope-To:` line it
/// puts first.
pub fn without_envelope_line(eml: &[u8]) -> &[u8] {
    assert!(eml.starts_with(b"X-Envelope-To: "), "a test server .eml");
    let end = eml
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("a first line");
    &eml[end + 2..]
}

fn piped(command: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("the command ends")
}
