//! The unit tests of the whole configuration: defaults, production's required keys,
//! refused values (each naming its variable), redaction and the sections' parsing.

use std::collections::HashMap;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::http::socket;
use super::*;
use crate::queue::QueueName;

fn map(vars: &[(&str, &str)]) -> HashMap<String, String> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map = map(vars);
    Config::from_lookup(|k| map.get(k).cloned())
}

fn auth(vars: &[(&str, &str)]) -> Result<AuthConfig, ConfigError> {
    let map = map(vars);
    AuthConfig::from_lookup(|k| map.get(k).cloned())
}

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[test]
fn defaults_outside_production_generate_secrets_and_migrate() {
    let cfg = config(&[]).expect("defaults are valid");
    assert_eq!(cfg.app_env, AppEnv::Development);
    assert!(cfg.database.auto_migrate);
    assert_eq!(cfg.generated_secrets, vec!["PII_KEY", "BLIND_INDEX_KEY"]);
    assert_eq!(cfg.http.api_addr, socket("127.0.0.1:8080"));
    assert_eq!(
        cfg.database_url(),
        "postgres://postgres@127.0.0.1:5432/conveyor"
    );
    assert_eq!(cfg.log_format, LogFormat::Pretty);
    assert_eq!(cfg.queues.emails.concurrency, 32);
    assert_eq!(cfg.queues.settings(QueueName::Canary).max_attempts, 3);
    let auth = auth(&[]).expect("defaults are valid");
    assert_eq!(
        auth.generated_secrets,
        vec!["JWT_SIGNING_KEY", "BLIND_INDEX_KEY"]
    );
    assert_eq!(auth.access_token_ttl, Duration::from_secs(900));
    assert_eq!(auth.refresh_token_ttl, Duration::from_secs(14 * 86_400));
}

#[test]
fn production_without_jwt_key_names_the_variable() {
    let err = auth(&[("APP_ENV", "production"), ("BLIND_INDEX_KEY", KEY)]).expect_err("must fail");
    assert!(matches!(
        err,
        ConfigError::MissingSecret {
            var: "JWT_SIGNING_KEY",
            ..
        }
    ));
    let line = err.to_string();
    assert!(
        line.starts_with("JWT_SIGNING_KEY is required when APP_ENV=production"),
        "{line}"
    );
    assert!(!line.contains('\n'));
}

#[test]
fn production_without_pii_key_names_the_variable() {
    let err = config(&[("APP_ENV", "production")]).expect_err("must fail");
    assert!(matches!(
        err,
        ConfigError::MissingSecret { var: "PII_KEY", .. }
    ));
}

#[test]
fn a_production_worker_needs_no_token_key() {
    let base = [("APP_ENV", "production"), ("PII_KEY", KEY)];
    // The suppression list's index and the unsubscribe links' origin.
    let err = config(&base).expect_err("no public url");
    assert!(matches!(
        err,
        ConfigError::MissingSecret {
            var: "PUBLIC_URL",
            ..
        }
    ));
    let mut vars = base.to_vec();
    vars.push(("PUBLIC_URL", "https://api.example.com"));
    let err = config(&vars).expect_err("no blind index key");
    assert!(matches!(
        err,
        ConfigError::MissingSecret {
            var: "BLIND_INDEX_KEY",
            ..
        }
    ));
    vars.push(("BLIND_INDEX_KEY", KEY));
    let cfg = config(&vars).expect("the worker's configuration is complete without auth keys");
    assert_eq!(cfg.mail.public_url, "https://api.example.com");
    assert!(!cfg.database.auto_migrate);
    assert!(cfg.generated_secrets.is_empty());
    assert_eq!(cfg.log_format, LogFormat::Json);
    assert_eq!(cfg.pii.key.expose_secret()[1], 1);
}

#[test]
fn production_without_blind_index_key_names_the_variable() {
    let err = auth(&[("APP_ENV", "production"), ("JWT_SIGNING_KEY", KEY)]).expect_err("must fail");
    assert!(matches!(
        err,
        ConfigError::MissingSecret {
            var: "BLIND_INDEX_KEY",
            ..
        }
    ));
}

#[test]
fn quotas_are_per_role_and_public_url_defaults_to_the_api_address() {
    let cfg = config(&[("EMAIL_QUOTA_PROMOTER_PER_HOUR", "7")]).expect("valid");
    assert_eq!(
        cfg.accounts.quota(crate::domain::Role::User),
        MessageQuota {
            per_hour: 100,
            per_day: 1000
        }
    );
    assert_eq!(
        cfg.accounts.quota(crate::domain::Role::Promoter).per_hour,
        7
    );
    let url = |vars: &[(&str, &str)]| {
        let map = map(vars);
        let env = Env {
            lookup: &|k: &str| map.get(k).cloned(),
        };
        let production = map.get("APP_ENV").is_some_and(|v| v == "production");
        public_url(&env, production)
    };
    assert_eq!(url(&[]).expect("default"), "http://127.0.0.1:8080");
    assert_eq!(
        url(&[("API_ADDR", "0.0.0.0:9000")]).expect("unspecified"),
        "http://127.0.0.1:9000"
    );
    assert_eq!(
        url(&[
            ("APP_ENV", "production"),
            ("PUBLIC_URL", "https://api.example.com/")
        ])
        .expect("https"),
        "https://api.example.com"
    );
    assert!(
        url(&[
            ("APP_ENV", "production"),
            ("PUBLIC_URL", "http://localhost:8080")
        ])
        .is_ok(),
        "plain http on loopback"
    );
    for bad in [
        "http://api.example.com",
        "http://localhost.example.com",
        "ftp://x",
        "https://",
        "https://a.example/?x=1",
    ] {
        assert!(
            url(&[("APP_ENV", "production"), ("PUBLIC_URL", bad)]).is_err(),
            "{bad}"
        );
    }
    assert!(matches!(
        url(&[("APP_ENV", "production")]),
        Err(ConfigError::MissingSecret {
            var: "PUBLIC_URL",
            ..
        })
    ));
}

#[test]
fn bad_values_are_refused_with_the_variable_name() {
    let cases: &[(&str, &str)] = &[
        ("APP_ENV", "staging"),
        ("API_ADDR", "localhost"),
        ("AUTO_MIGRATE", "maybe"),
        ("DATABASE_URL", "mysql://x@y/z"),
        ("REDIS_URL", "not a url"),
        ("REDIS_CLUSTER_URLS", "redis://127.0.0.1:7101,not a url"),
        ("REDIS_CLUSTER_URLS", "http://127.0.0.1:7101"),
        (
            "REDIS_CLUSTER_URLS",
            "redis://127.0.0.1:7101,,redis://127.0.0.1:7102",
        ),
        ("REDIS_CLUSTER_URLS", "redis://127.0.0.1:7101/2"),
        (
            "REDIS_CLUSTER_URLS",
            "redis://127.0.0.1:7101,rediss://127.0.0.1:7102",
        ),
        ("SMTP_URL", "http://mail"),
        ("PII_KEY", "c2hvcnQ="),
        ("DATABASE_MAX_CONNECTIONS", "0"),
        ("BODY_LIMIT_BYTES", "12abc"),
        ("REDIS_PREFIX", "a b"),
        ("PII_KEY_ID", "way-too-long-key-identifier"),
        (
            "CORS_ALLOWED_ORIGINS",
            "https://ok.example,https://bad.example/path",
        ),
        ("LOG_FORMAT", "xml"),
        ("PII_PREVIOUS_KEYS", "k0"),
        ("TRUST_FORWARDED_FOR", "sometimes"),
        ("CANARY_TIMEOUT_SECS", "0"),
        ("EMAILS_CONCURRENCY", "0"),
        ("RETENTION_DAYS", "0"),
        ("EMAIL_QUOTA_USER_PER_HOUR", "0"),
        ("EMAIL_QUOTA_PROMOTER_PER_DAY", "lots"),
        ("UNVERIFIED_ACCOUNT_TTL_SECS", "60"),
        ("CONSOLE_TRACE_URL", "http://127.0.0.1:16686/trace/"),
        ("CONSOLE_TRACE_URL", "javascript:alert({trace_id})"),
    ];
    for (var, value) in cases {
        let err = config(&[(var, value)]).expect_err(var);
        match &err {
            ConfigError::Invalid { var: got, .. } => assert_eq!(got, var),
            other => panic!("{var}: unexpected {other:?}"),
        }
        assert!(err.to_string().starts_with(var), "{err}");
    }
    let auth_cases: &[(&str, &str)] = &[
        ("JWT_SIGNING_KEY", "%%%"),
        ("JWT_KEY_ID", "way-too-long-key-identifier"),
        ("JWT_ACCESS_TTL_SECS", "5"),
        ("LOGIN_MAX_FAILURES_IP", "0"),
    ];
    for (var, value) in auth_cases {
        let err = auth(&[(var, value)]).expect_err(var);
        assert!(err.to_string().starts_with(var), "{err}");
    }
}

#[test]
fn debug_output_redacts_every_secret_including_retired_keys() {
    const OLD: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    let cfg = config(&[
        ("DATABASE_URL", "postgres://app:hunter2@db/conveyor"),
        ("REDIS_URL", "redis://:s3cret@cache:6379"),
        ("SMTP_URL", "smtps://mailer:pa55word@smtp.example:465"),
        ("PII_KEY", KEY),
        ("PII_PREVIOUS_KEYS", &format!("k0:{OLD}")),
    ])
    .expect("valid");
    let debug = format!("{cfg:?}");
    for secret in ["hunter2", "s3cret", "pa55word", KEY, OLD] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    // Raw key bytes would show as a list of numbers.
    assert!(!debug.contains("[0, 1, 2, 3"), "{debug}");
    assert!(!debug.contains("32, 33, 34"), "{debug}");
    assert!(debug.contains("REDACTED"));
    let auth = format!(
        "{:?}",
        auth(&[("JWT_SIGNING_KEY", KEY), ("BLIND_INDEX_KEY", KEY)]).expect("valid")
    );
    assert!(
        !auth.contains(KEY) && !auth.contains("[0, 1, 2, 3"),
        "{auth}"
    );
}

#[test]
fn previous_pii_keys_are_parsed() {
    let cfg = config(&[("PII_PREVIOUS_KEYS", &format!("k0:{KEY}, old:{KEY}"))]).expect("valid");
    let ids: Vec<&str> = cfg
        .pii
        .previous_keys
        .iter()
        .map(|k| k.id.as_str())
        .collect();
    assert_eq!(ids, vec!["k0", "old"]);
    assert_eq!(cfg.pii.previous_keys[0].key.expose_secret()[31], 31);
}

#[test]
fn redis_cluster_urls_win_over_redis_url() {
    let cfg = config(&[]).expect("defaults are valid");
    assert!(
        matches!(&cfg.redis.server, RedisServer::Single { url } if url.expose_secret() == "redis://127.0.0.1:6379")
    );
    let cfg = config(&[
        ("REDIS_URL", "not a url, and ignored"),
        (
            "REDIS_CLUSTER_URLS",
            " redis://127.0.0.1:7101, redis://:s3cret@127.0.0.1:7102/0 ",
        ),
    ])
    .expect("valid");
    let RedisServer::Cluster { seeds } = &cfg.redis.server else {
        panic!("cluster mode: {:?}", cfg.redis.server);
    };
    let seeds: Vec<&str> = seeds.iter().map(|s| s.expose_secret()).collect();
    assert_eq!(
        seeds,
        ["redis://127.0.0.1:7101", "redis://:s3cret@127.0.0.1:7102/0"]
    );
    assert!(!format!("{cfg:?}").contains("s3cret"));
    let err = config(&[("REDIS_CLUSTER_URLS", "redis://:s3cret@127.0.0.1:7101/3")])
        .expect_err("a database other than 0");
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

#[test]
fn cors_origins_are_split_and_trimmed() {
    let cfg = config(&[(
        "CORS_ALLOWED_ORIGINS",
        " https://a.example , http://localhost:3000",
    )])
    .expect("valid");
    assert_eq!(
        cfg.http.cors_allowed_origins,
        vec!["https://a.example", "http://localhost:3000"]
    );
}

#[test]
fn the_console_trace_url_is_optional_and_keeps_its_placeholder() {
    assert_eq!(config(&[]).expect("defaults").http.console_trace_url, None);
    let template = "http://127.0.0.1:16686/trace/{trace_id}";
    let cfg = config(&[("CONSOLE_TRACE_URL", template)]).expect("valid");
    assert_eq!(cfg.http.console_trace_url.as_deref(), Some(template));
}

/// Every variable the configuration reads is in `.env.example` (set or commented out):
/// each name asked for while reading the configurations below — defaults, production
/// with its keys, S3 storage, a Redis Cluster, DKIM — is recorded and looked up there,
/// so a new variable cannot ship undocumented (the book's configuration tables are
/// held to `.env.example` by `scripts/check-docs`).
#[test]
fn every_variable_read_is_in_env_example() {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.env.example"),
    )
    .expect(".env.example");
    let documented: BTreeSet<&str> = example
        .lines()
        .map(|line| line.trim_start_matches('#').trim_start())
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    let asked = RefCell::new(BTreeSet::new());
    let environments: [&[(&str, &str)]; 5] = [
        &[],
        &[
            ("APP_ENV", "production"),
            ("JWT_SIGNING_KEY", KEY),
            ("PII_KEY", KEY),
            ("BLIND_INDEX_KEY", KEY),
            ("PII_PREVIOUS_KEYS", KEY),
        ],
        &[("STORAGE_URL", "s3://bucket/prefix")],
        &[(
            "REDIS_CLUSTER_URLS",
            "redis://127.0.0.1:7000,redis://127.0.0.1:7001",
        )],
        &[("DKIM_DOMAIN", "example.org"), ("DKIM_SELECTOR", "s1")],
    ];
    for vars in environments {
        let map = map(vars);
        let lookup = |name: &str| {
            asked.borrow_mut().insert(name.to_owned());
            map.get(name).cloned()
        };
        // Whether each configuration is valid here does not matter: what was asked does.
        let _ = Config::from_lookup(lookup);
        let _ = AuthConfig::from_lookup(lookup);
        let _ = DkimConfig::from_lookup(lookup);
    }
    let asked = asked.into_inner();
    assert!(
        asked.len() > 100,
        "only {} variables were asked for",
        asked.len()
    );
    let missing: Vec<&String> = asked
        .iter()
        .filter(|name| !documented.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "read by the configuration but not in .env.example: {missing:?}"
    );
}
