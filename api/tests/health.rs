//! Liveness, readiness against real and unreachable dependencies, metrics and docs.

mod common;

use common::{closed_port, problem, spawn_app, spawn_app_with, test_config};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn live_and_ready_answer_200_when_dependencies_answer(pool: PgPool) {
    let app = spawn_app(pool).await;
    let live = app.get("/health/live").await;
    assert_eq!(live.status(), 200);
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(
        body,
        serde_json::json!({"status": "ready", "postgres": "up", "redis": "up"})
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn ready_is_503_naming_redis_when_redis_is_unreachable(pool: PgPool) {
    let redis = format!("redis://127.0.0.1:{}", closed_port());
    let config = test_config(&[("REDIS_URL", &redis), ("HEALTH_TIMEOUT_MS", "500")]);
    let app = spawn_app_with(pool, config, None).await;
    let body = problem(
        app.get("/health/ready").await,
        503,
        "dependency_unavailable",
    )
    .await;
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("redis"), "{detail}");
    assert!(!detail.contains("postgres"), "{detail}");
    // Liveness does not depend on Redis.
    assert_eq!(app.get("/health/live").await.status(), 200);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn ready_is_503_naming_postgres_when_postgres_is_unreachable(pool: PgPool) {
    let url = format!("postgres://postgres@127.0.0.1:{}/none", closed_port());
    let dead_pool = PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(300))
        .connect_lazy(&url)
        .expect("url parses");
    drop(pool);
    let config = test_config(&[("HEALTH_TIMEOUT_MS", "500")]);
    let app = spawn_app_with(dead_pool, config, None).await;
    let body = problem(
        app.get("/health/ready").await,
        503,
        "dependency_unavailable",
    )
    .await;
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("postgres") && !detail.contains("redis"),
        "{detail}"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn openapi_spec_and_docs_page_are_served(pool: PgPool) {
    let app = spawn_app(pool).await;
    let spec: serde_json::Value = app
        .get("/api/v1/openapi.json")
        .await
        .json()
        .await
        .expect("json");
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3."))
    );
    assert!(spec["paths"]["/health/ready"]["get"].is_object(), "{spec}");
    assert!(spec["components"]["schemas"]["Problem"].is_object());
    let upload = &spec["paths"]["/api/v1/uploads"]["post"];
    assert!(
        upload["requestBody"]["content"]["multipart/form-data"].is_object(),
        "{upload}"
    );
    for (path, method) in [
        ("/api/v1/uploads", "get"),
        ("/api/v1/uploads/{id}", "get"),
        ("/api/v1/uploads/{id}/content", "get"),
        ("/api/v1/scans", "post"),
        ("/api/v1/admin/scans/rescan-all", "post"),
    ] {
        assert!(spec["paths"][path][method].is_object(), "{method} {path}");
    }
    // The interactive reference (Swagger UI, vendored): its page, its assets from
    // this origin, pointed at the spec, under a CSP that allows only this origin.
    let docs = app.get("/docs").await;
    assert_eq!(docs.status(), 200, "/docs redirects to the reference");
    let csp = docs
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(docs.text().await.expect("html").contains("swagger-ui"));
    let initializer = app.get("/docs/swagger-initializer.js").await;
    assert_eq!(initializer.status(), 200);
    assert!(
        initializer
            .text()
            .await
            .expect("js")
            .contains("/api/v1/openapi.json")
    );
    assert_eq!(app.get("/docs/swagger-ui-bundle.js").await.status(), 200);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn requests_are_counted_by_route_template(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.get("/api/v1").await;
    let metrics = shared::telemetry::prometheus().render();
    assert!(
        metrics
            .contains(r#"conveyor_http_requests_total{method="GET",route="/api/v1",status="200"}"#),
        "{metrics}"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn extension_methods_are_counted_as_other(pool: PgPool) {
    let app = spawn_app(pool).await;
    for (i, path) in ["/api/v1", "/api/v1/requests", "/nowhere"]
        .iter()
        .enumerate()
    {
        let method = reqwest::Method::from_bytes(format!("FOO12{i}").as_bytes()).expect("method");
        let response = app
            .client
            .request(method, app.url(path))
            .send()
            .await
            .expect("sent");
        assert!(response.status().is_client_error(), "{path}");
    }
    let metrics = shared::telemetry::prometheus().render();
    assert!(
        metrics.contains(r#"conveyor_http_requests_total{method="other","#),
        "{metrics}"
    );
    assert!(!metrics.contains("FOO12"), "{metrics}");
}

/// A `{"$ref": "#/components/…"}` of the document followed to what it names.
fn resolve<'a>(spec: &'a serde_json::Value, value: &'a serde_json::Value) -> &'a serde_json::Value {
    match value["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("a local reference");
            let target = spec
                .pointer(pointer)
                .unwrap_or_else(|| panic!("{reference} resolves"));
            resolve(spec, target)
        }
        None => value,
    }
}

#[test]
fn every_operation_documents_its_answers_and_headers() {
    let spec: serde_json::Value =
        serde_json::from_str(&api::openapi::json()).expect("the spec is JSON");
    let mut ids = std::collections::HashSet::new();
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            operations += 1;
            let id = operation["operationId"].as_str().expect("an operation id");
            assert!(ids.insert(id.to_owned()), "{id} is not unique");
            let responses = operation["responses"].as_object().expect("responses");
            for status in ["429", "500", "503"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path}: no {status}"
                );
            }
            if operation.get("security").is_some() {
                assert!(responses.contains_key("401"), "{method} {path}: no 401");
            }
            for (status, response) in responses {
                let response = resolve(&spec, response);
                for header in response["headers"].as_object().into_iter().flatten() {
                    assert!(resolve(&spec, header.1)["schema"].is_object());
                }
                assert!(
                    response["description"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty()),
                    "{method} {path} {status}: no description"
                );
                assert!(response["headers"]["x-request-id"].is_object());
                if status.starts_with('4') || status.starts_with('5') {
                    assert!(
                        response["content"]["application/problem+json"].is_object(),
                        "{method} {path} {status}: problems are application/problem+json"
                    );
                }
            }
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["in"] == "path" {
                    let name = parameter["name"].as_str().expect("name");
                    assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: path parameter {name}"
                    );
                }
            }
        }
    }
    assert!(operations >= 27, "{operations}");
}

/// What generated clients need of the document beyond each operation's happy path:
/// both bodies of a login, the event stream's data, the refresh cookie and CSRF
/// header, the webhook Conveyor sends, the types a download comes in — and the shared
/// headers and problems declared once, not repeated in every response.
#[test]
fn the_contract_declares_what_clients_generate_from() {
    let spec: serde_json::Value =
        serde_json::from_str(&api::openapi::json()).expect("the spec is JSON");
    let schema_ref =
        |name: &str| serde_json::json!({"$ref": format!("#/components/schemas/{name}")});

    let login = &spec["paths"]["/api/v1/auth/login"]["post"]["responses"]["200"];
    let body = resolve(&spec, &login["content"]["application/json"]["schema"]);
    let one_of = body["oneOf"]
        .as_array()
        .expect("login's 200 is one of two bodies");
    assert!(one_of.contains(&schema_ref("TokenResponse")), "{body}");
    assert!(one_of.contains(&schema_ref("MfaChallenge")), "{body}");
    assert!(login["headers"]["Set-Cookie"].is_object());

    let events = &spec["paths"]["/api/v1/requests/{id}/events"]["get"]["responses"]["200"];
    assert_eq!(
        events["content"]["text/event-stream"]["schema"],
        schema_ref("Progress"),
        "the stream's schema is each event's data"
    );

    for (path, cookie_required) in [
        ("/api/v1/auth/refresh", true),
        ("/api/v1/auth/logout", false),
    ] {
        let parameters = spec["paths"][path]["post"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} has parameters"));
        let find = |place: &str, name: &str| {
            parameters
                .iter()
                .find(|p| p["in"] == place && p["name"] == name)
                .unwrap_or_else(|| panic!("{path}: no {place} parameter {name}"))
        };
        assert_eq!(
            find("header", "X-Requested-With")["required"],
            true,
            "{path}"
        );
        assert_eq!(
            find("cookie", api::routes::auth::REFRESH_COOKIE)["required"],
            cookie_required,
            "{path}"
        );
    }

    let webhook = &spec["webhooks"]["request.finished"]["post"];
    assert_eq!(
        webhook["requestBody"]["content"]["application/json"]["schema"],
        schema_ref("RequestFinishedEvent")
    );
    for header in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        assert!(
            webhook["parameters"]
                .as_array()
                .expect("parameters")
                .iter()
                .any(|p| p["in"] == "header" && p["name"] == header && p["required"] == true),
            "{header}"
        );
    }
    let event = &spec["components"]["schemas"]["RequestFinishedEvent"];
    assert!(event["properties"]["type"].is_object() && event["properties"]["data"].is_object());

    let download =
        &spec["paths"]["/api/v1/uploads/{id}/content"]["get"]["responses"]["200"]["content"];
    for file_type in shared::files::FileType::ALL {
        assert_eq!(
            download[file_type.mime()]["schema"],
            serde_json::json!({"type": "string", "format": "binary"}),
            "{}",
            file_type.mime()
        );
    }

    let text = api::openapi::json();
    assert_eq!(
        text.matches("The route group's budget").count(),
        1,
        "the rate-limit headers are declared once"
    );
    let problem = &spec["paths"]["/api/v1/emails"]["post"]["responses"]["429"];
    assert_eq!(problem["$ref"], "#/components/responses/Problem429");
    assert!(resolve(&spec, problem)["headers"]["Retry-After"].is_object());
}

/// PostgreSQL unreachable (through a proxy this test cuts): the request that finds it
/// down is 503, and from then on every request is 503 `dependency_unavailable` with
/// `Retry-After: 1` at once, not after the pool's timeout each; once it is reachable
/// again, submissions are accepted within the probe's period.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn with_postgres_unreachable_requests_are_refused_at_once_until_it_is_back(pool: PgPool) {
    let mut url = url::Url::parse(&harness::database_url_of(&pool).await).expect("url");
    let target = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432)
    );
    let mut proxy = harness::proxy::TcpProxy::start(&target).await;
    url.set_port(Some(proxy.port())).expect("port");
    let config = test_config(&[("DATABASE_URL", url.as_str())]);
    let proxied = shared::db::pool(&config).expect("pool");
    let app = spawn_app_with(proxied, config, None).await;
    let (_, session) = app.signed_in_user().await;
    let email = serde_json::json!({"to": ["ada@example.org"], "subject": "s", "text": "t"});
    let send = || app.post_json_authed("/api/v1/emails", &email, &session.access_token);
    assert_eq!(send().await.status(), 202);

    proxy.cut().await;
    let found = std::time::Instant::now();
    let first = send().await;
    assert_eq!(first.headers()["retry-after"], "1");
    problem(first, 503, "dependency_unavailable").await;
    let found = found.elapsed();
    let refused = std::time::Instant::now();
    for _ in 0..20 {
        let response = send().await;
        assert_eq!(response.headers()["retry-after"], "1");
        let body = problem(response, 503, "dependency_unavailable").await;
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("postgres")),
            "{body}"
        );
    }
    let each = refused.elapsed() / 20;
    let metrics = shared::telemetry::prometheus().render();
    assert!(
        metrics
            .contains(r#"conveyor_dependency_breaker_open{service="api",dependency="postgres"} 1"#),
        "the breaker is open"
    );
    // Health and liveness are not behind the breaker.
    assert_eq!(app.get("/health/live").await.status(), 200);

    proxy.restore().await;
    let restored = std::time::Instant::now();
    harness::eventually(
        std::time::Duration::from_secs(15),
        "a submission is accepted once PostgreSQL is back",
        || async { (send().await.status() == 202).then_some(()) },
    )
    .await;
    eprintln!(
        "the first request found PostgreSQL down in {found:?}; the next 20 were refused in \
         {each:?} each; the first 202 came {:?} after it was reachable again",
        restored.elapsed()
    );
}

/// Redis unreachable (through a proxy this test cuts): submissions are still accepted
/// (the jobs wait in PostgreSQL for the dispatcher) and, once the first request has
/// found Redis down, at near-normal latency: the limiter and the push skip Redis while
/// it is known down instead of each waiting for it. Once it is back, Redis is used again.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn with_redis_unreachable_submissions_are_accepted_without_waiting_for_it(pool: PgPool) {
    let mut proxy = harness::proxy::TcpProxy::start("127.0.0.1:6379").await;
    let redis = format!("redis://127.0.0.1:{}", proxy.port());
    let config = test_config(&[("REDIS_URL", redis.as_str())]);
    let app = spawn_app_with(pool, config, None).await;
    let (_, session) = app.signed_in_user().await;
    let email = serde_json::json!({"to": ["ada@example.org"], "subject": "s", "text": "t"});
    let send = || app.post_json_authed("/api/v1/emails", &email, &session.access_token);
    let timed = || async {
        let started = std::time::Instant::now();
        let response = send().await;
        (response.status(), started.elapsed())
    };
    let (status, normal) = timed().await;
    assert_eq!(status, 202);

    proxy.cut().await;
    let (status, finding) = timed().await;
    assert_eq!(status, 202, "accepted while Redis is down");
    let mut during = Vec::new();
    for _ in 0..20 {
        let (status, took) = timed().await;
        assert_eq!(status, 202, "accepted while Redis is down");
        during.push(took);
    }
    during.sort();
    let undispatched: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE dispatched_at IS NULL")
            .fetch_one(&app.state.pool)
            .await
            .expect("count");
    assert!(
        undispatched >= 20,
        "the jobs wait in PostgreSQL: {undispatched}"
    );

    proxy.restore().await;
    harness::eventually(
        std::time::Duration::from_secs(15),
        "Redis is used again",
        || async { app.state.redis.ping().await.is_ok().then_some(()) },
    )
    .await;
    eprintln!(
        "POST /emails: {normal:?} with Redis; {finding:?} for the request that found it down; \
         then p50 {:?}, max {:?} while it was down",
        during[during.len() / 2],
        during[during.len() - 1]
    );
}
