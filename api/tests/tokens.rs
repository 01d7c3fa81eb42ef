//! Access-token validation against forged, altered and malformed tokens: every one is
//! a 401 (never a 500), `token_expired` only for a genuine expired token.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{Session, TestApp, problem, spawn_app_with, test_config};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sqlx::PgPool;

const SEED: [u8; 32] = [7; 32];

async fn app(pool: PgPool) -> TestApp {
    let key = STANDARD.encode(SEED);
    spawn_app_with(
        pool,
        test_config(&[("JWT_SIGNING_KEY", &key), ("JWT_KEY_ID", "main")]),
        None,
    )
    .await
}

fn ed_key(seed: [u8; 32]) -> EncodingKey {
    let der = SigningKey::from_bytes(&seed).to_pkcs8_der().expect("pkcs8");
    EncodingKey::from_ed_der(der.as_bytes())
}

fn public_key(seed: [u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(&seed).verifying_key().to_bytes()
}

/// The claims of a real token, to alter.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("json")
}

fn sign(claims: &Value, seed: [u8; 32], kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &ed_key(seed)).expect("sign")
}

/// A token from raw header and payload JSON with an arbitrary signature part.
fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"));
    format!("{}.{}.{signature}", part(header), part(claims))
}

async fn signed_in(app: &TestApp) -> Session {
    app.signed_in_user().await.1
}

async fn assert_unauthenticated(app: &TestApp, token: &str) {
    let response = app.get_authed("/api/v1/me", token).await;
    assert!(
        response.headers().get("www-authenticate").is_some(),
        "WWW-Authenticate missing"
    );
    problem(response, 401, "unauthenticated").await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_genuine_token_works_and_its_re_signed_copy_too(pool: PgPool) {
    let app = app(pool).await;
    let session = signed_in(&app).await;
    assert_eq!(
        app.get_authed("/api/v1/me", &session.access_token)
            .await
            .status(),
        200
    );
    let copy = sign(&claims_of(&session.access_token), SEED, Some("main"));
    assert_eq!(
        app.get_authed("/api/v1/me", &copy).await.status(),
        200,
        "the test signer matches the server"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_expired_token_is_token_expired(pool: PgPool) {
    let app = app(pool).await;
    let session = signed_in(&app).await;
    let mut claims = claims_of(&session.access_token);
    claims["iat"] = json!(1_600_000_000);
    claims["exp"] = json!(1_600_000_900);
    let response = app
        .get_authed("/api/v1/me", &sign(&claims, SEED, Some("main")))
        .await;
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .starts_with("Bearer")
    );
    problem(response, 401, "token_expired").await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn forged_and_altered_tokens_are_refused(pool: PgPool) {
    let app = app(pool).await;
    let session = signed_in(&app).await;
    let claims = claims_of(&session.access_token);
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": "main"});

    // Signed with another key.
    assert_unauthenticated(&app, &sign(&claims, [9; 32], Some("main"))).await;
    // An unknown kid, even with the right key.
    assert_unauthenticated(&app, &sign(&claims, SEED, Some("other"))).await;
    assert_unauthenticated(&app, &sign(&claims, SEED, None)).await;
    // A jku pointing elsewhere is never followed.
    let mut jku = header.clone();
    jku["jku"] = json!("http://127.0.0.1:1/jwks.json");
    let forged = sign(&claims, [9; 32], Some("main"));
    let signature = forged.split('.').nth(2).expect("signature");
    assert_unauthenticated(&app, &raw_token(&jku, &claims, signature)).await;
    // alg none, in any casing, with and without a signature.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let none = json!({"alg": alg, "typ": "JWT", "kid": "main"});
        assert_unauthenticated(&app, &raw_token(&none, &claims, "")).await;
        assert_unauthenticated(&app, &raw_token(&none, &claims, "c2ln")).await;
    }
    // HS256 keyed with the public key (algorithm confusion), raw and as JWK text.
    let public = public_key(SEED);
    for secret in [public.to_vec(), URL_SAFE_NO_PAD.encode(public).into_bytes()] {
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some("main".into());
        let token =
            jsonwebtoken::encode(&hs, &claims, &EncodingKey::from_secret(&secret)).expect("sign");
        assert_unauthenticated(&app, &token).await;
    }
    // Wrong audience, wrong issuer, missing exp, tampered role.
    let altered = |key: &str, value: Option<Value>| {
        let mut c = claims.clone();
        match value {
            Some(v) => c[key] = v,
            None => {
                c.as_object_mut().map(|o| o.remove(key));
            }
        }
        c
    };
    for changed in [
        altered("aud", Some(json!("someone-else"))),
        altered("iss", Some(json!("https://evil.example"))),
        altered("exp", None),
        altered("sub", None),
        altered("jti", None),
    ] {
        assert_unauthenticated(&app, &sign(&changed, SEED, Some("main"))).await;
    }
    let genuine = &session.access_token;
    let parts: Vec<&str> = genuine.split('.').collect();
    let tampered_claims = altered("role", Some(json!("admin")));
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&tampered_claims).expect("json")),
        parts[2]
    );
    assert_unauthenticated(&app, &tampered).await;
    // A correctly signed token whose role does not match the account's is refused too.
    assert_unauthenticated(&app, &sign(&tampered_claims, SEED, Some("main"))).await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn garbage_tokens_are_401_never_500(pool: PgPool) {
    let app = app(pool).await;
    let huge = "A".repeat(16 * 1024);
    for token in [
        huge.as_str(),
        "",
        "a.b.c",
        "....",
        "eyJhbGciOiJFZERTQSJ9",
        "not a token at all",
        "💥.💥.💥",
    ] {
        let response = app
            .client
            .get(app.url("/api/v1/me"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .expect("sent");
        problem(response, 401, "unauthenticated").await;
    }
    for header in ["Basic dXNlcjpwYXNz", "Bearer", "token-without-scheme"] {
        let response = app
            .client
            .get(app.url("/api/v1/me"))
            .header("authorization", header)
            .send()
            .await
            .expect("sent");
        problem(response, 401, "unauthenticated").await;
    }
    problem(app.get("/api/v1/me").await, 401, "unauthenticated").await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn jwks_publishes_the_verifying_key(pool: PgPool) {
    let app = app(pool).await;
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .expect("json");
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["kid"], "main");
    assert_eq!(key["x"], URL_SAFE_NO_PAD.encode(public_key(SEED)));
    assert!(key.get("d").is_none(), "never the private part");
}
