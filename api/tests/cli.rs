//! The `api` command line: help and configuration errors (one line, exit 2).

use std::process::Command;

fn api(vars: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_api"));
    command
        .args(args)
        .env_clear()
        .current_dir(std::env::temp_dir());
    for (key, value) in vars {
        command.env(key, value);
    }
    command.output().expect("api runs")
}

fn one_line_error(output: &std::process::Output) -> String {
    assert_eq!(output.status.code(), Some(2), "exit status");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn production_without_a_public_url_refuses_to_start() {
    let keys = [
        ("APP_ENV", "production"),
        ("PII_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
        (
            "JWT_SIGNING_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        ),
        (
            "BLIND_INDEX_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        ),
    ];
    let line = one_line_error(&api(&keys, &["serve"]));
    assert!(
        line.contains("PUBLIC_URL is required when APP_ENV=production"),
        "{line}"
    );
    let mut vars = keys.to_vec();
    vars.push(("PUBLIC_URL", "http://api.example.com"));
    let output = api(&vars, &["serve"]);
    let line = one_line_error(&output);
    assert!(line.contains("PUBLIC_URL is invalid"), "{line}");
}

#[test]
fn production_without_a_jwt_key_refuses_to_start() {
    let output = api(
        &[
            ("APP_ENV", "production"),
            ("PUBLIC_URL", "https://api.example.com"),
            ("PII_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
            (
                "BLIND_INDEX_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
        ],
        &["serve"],
    );
    let line = one_line_error(&output);
    assert!(
        line.contains("JWT_SIGNING_KEY is required when APP_ENV=production"),
        "{line}"
    );
}

#[test]
fn production_without_a_pii_key_refuses_to_start() {
    let output = api(
        &[
            ("APP_ENV", "production"),
            ("PUBLIC_URL", "https://api.example.com"),
            (
                "JWT_SIGNING_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
        ],
        &[],
    );
    let line = one_line_error(&output);
    assert!(line.contains("PII_KEY is required"), "{line}");
}

#[test]
fn a_bad_value_names_the_variable() {
    let output = api(
        &[("APP_ENV", "test"), ("API_ADDR", "not-an-address")],
        &["serve"],
    );
    let line = one_line_error(&output);
    assert!(line.contains("API_ADDR is invalid"), "{line}");
}

#[test]
fn help_lists_the_subcommands() {
    let output = api(&[], &["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in ["serve", "migrate", ".env.example"] {
        assert!(help.contains(expected), "{expected} missing from:\n{help}");
    }
}
