//! The operators' admin API: only admins with a 2FA login; queue counts and the pause
//! switch; job listings; canaries; the audit log of it all; the spec of every route.
//! Retry and discard are in `admin_jobs.rs`, the command line in `admin_cli.rs`.

mod admin_support;
mod common;

use admin_support::*;
use common::{PASSWORD, eventually, problem, spawn_app};
use serde_json::{Value, json};
use shared::domain::Role;
use shared::queue::{QueueName, pause};
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn users_promoters_and_admins_without_2fa_get_403_on_every_admin_route(pool: PgPool) {
    let app = spawn_app(pool).await;
    let id = Uuid::now_v7();
    let routes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/api/v1/admin/queues".into(), None),
        ("POST", "/api/v1/admin/queues/emails/pause".into(), None),
        ("POST", "/api/v1/admin/queues/emails/resume".into(), None),
        ("GET", "/api/v1/admin/jobs".into(), None),
        ("GET", format!("/api/v1/admin/jobs/{id}"), None),
        ("POST", format!("/api/v1/admin/jobs/{id}/retry"), None),
        ("POST", format!("/api/v1/admin/jobs/{id}/discard"), None),
        (
            "POST",
            "/api/v1/admin/jobs/retry".into(),
            Some(json!({"queue": "emails", "status": "dead"})),
        ),
        ("GET", format!("/api/v1/admin/operations/{id}"), None),
        (
            "POST",
            "/api/v1/admin/canary".into(),
            Some(json!({"count": 1})),
        ),
        ("GET", "/api/v1/admin/audit".into(), None),
        (
            "PATCH",
            format!("/api/v1/admin/users/{id}"),
            Some(json!({"role": "user"})),
        ),
        ("POST", "/api/v1/admin/scans/rescan-all".into(), None),
    ];
    let mut callers = Vec::new();
    for (role, code) in [
        (Role::User, "forbidden"),
        (Role::Promoter, "forbidden"),
        (Role::Admin, "mfa_required"),
    ] {
        let (_, email) = app.create_account(role).await;
        callers.push((role, app.login(&email, PASSWORD).await.access_token, code));
    }
    for (role, token, code) in &callers {
        for (method, path, body) in &routes {
            let mut request = app
                .client
                .request(method.parse().expect("method"), app.url(path))
                .bearer_auth(token);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.expect("sent");
            assert_eq!(response.status(), 403, "{role:?} {method} {path}");
            problem(response, 403, code).await;
        }
    }
    // Nothing happened: no pause, no request, no audit row.
    assert!(
        pause::paused(&app.state.redis)
            .await
            .expect("redis")
            .is_empty()
    );
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&app.state.pool)
        .await
        .expect("count");
    assert_eq!(audited, 0);
    let requests: i64 = sqlx::query_scalar("SELECT count(*) FROM requests")
        .fetch_one(&app.state.pool)
        .await
        .expect("count");
    assert_eq!(requests, 0);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn pause_and_resume_switch_the_queue_in_redis_and_are_audited(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_with_2fa().await;
    let paused = post_json(&app, "/api/v1/admin/queues/emails/pause", &admin, 200).await;
    assert_eq!(
        paused,
        json!({"queue": "emails", "paused": true, "changed": true})
    );
    let set = pause::paused(&app.state.redis).await.expect("redis");
    assert_eq!(set.into_iter().collect::<Vec<_>>(), vec![QueueName::Emails]);
    let again = post_json(&app, "/api/v1/admin/queues/emails/pause", &admin, 200).await;
    assert_eq!(again["changed"], false);
    let queues = get_json(&app, "/api/v1/admin/queues", &admin).await;
    assert_eq!(queue(&queues, "emails")["paused"], true);
    assert_eq!(queue(&queues, "scans")["paused"], false);

    // Paused queues still accept submissions.
    let (_, session) = app.signed_in_user().await;
    app.send_email(&session.access_token, "someone@example.org", "Waits")
        .await;

    let resumed = post_json(&app, "/api/v1/admin/queues/emails/resume", &admin, 200).await;
    assert_eq!(
        resumed,
        json!({"queue": "emails", "paused": false, "changed": true})
    );
    assert!(
        pause::paused(&app.state.redis)
            .await
            .expect("redis")
            .is_empty()
    );
    let unknown = app
        .post_authed("/api/v1/admin/queues/nowhere/pause", &admin)
        .await;
    assert_eq!(unknown.status(), 400);

    let rows = audit(&app, &admin).await;
    let actions: Vec<(&str, &str, bool)> = rows
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default(),
                r["target"].as_str().unwrap_or_default(),
                r["details"]["changed"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("resume", "queue:emails", true),
            ("pause", "queue:emails", false),
            ("pause", "queue:emails", true),
        ],
        "newest first"
    );
    let metrics = shared::telemetry::prometheus().render();
    assert!(
        metrics.contains(r#"conveyor_admin_actions_total{action="pause"} 2"#),
        "{metrics}"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn queues_report_counts_ages_and_live_workers(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_with_2fa().await;
    let empty = get_json(&app, "/api/v1/admin/queues", &admin).await;
    let names: Vec<&str> = empty["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .filter_map(|q| q["queue"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "emails",
            "uploads",
            "scans",
            "webhooks",
            "operations",
            "chores",
            "canary"
        ],
        "every queue, webhook deliveries, operations and chores too"
    );
    let canary = queue(&empty, "canary");
    assert_eq!(canary["queued"], 0);
    assert!(canary["oldest_queued_age_seconds"].is_null());
    assert_eq!(canary["workers_alive"], 0);

    dead_canaries(&app, 2, "boom").await;
    let (owner, _) = app.create_account(Role::User).await;
    app.submit_canaries(owner, 3).await;
    let counted = get_json(&app, "/api/v1/admin/queues", &admin).await;
    let canary = queue(&counted, "canary");
    assert_eq!(
        (canary["queued"].as_i64(), canary["dead"].as_i64()),
        (Some(3), Some(2)),
        "{canary}"
    );
    assert!(
        canary["oldest_queued_age_seconds"]
            .as_i64()
            .is_some_and(|s| s >= 0)
    );

    let worker = app.start_worker();
    let canary = eventually(
        LONG,
        "the worker is alive and drained the queue",
        || async {
            let list = get_json(&app, "/api/v1/admin/queues", &admin).await;
            let canary = queue(&list, "canary").clone();
            (canary["workers_alive"].as_u64() >= Some(1) && canary["succeeded_last_hour"] == 3)
                .then_some(canary)
        },
    )
    .await;
    assert_eq!(canary["queued"], 0);
    worker.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_canary_request_runs_through_the_pipeline_and_only_on_the_canary_queue(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_with_2fa().await;
    let response = app
        .post_json_authed("/api/v1/admin/canary", &json!({"count": 5}), &admin)
        .await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let accepted: Value = response.json().await.expect("json");
    assert_eq!(
        (accepted["kind"].as_str(), accepted["total"].as_i64()),
        (Some("canary"), Some(5))
    );
    assert_eq!(
        location,
        format!("/api/v1/requests/{}", accepted["id"].as_str().expect("id"))
    );
    app.run_pending_jobs().await;
    let request = get_json(&app, &location, &admin).await;
    assert_eq!(request["status"], "succeeded", "{request}");
    assert_eq!(request["jobs"]["succeeded"], 5);

    for body in [
        json!({"count": 1, "queue": "emails"}),
        json!({"count": 0}),
        json!({"count": 10001}),
        json!({"count": -1}),
        json!({"count": 1.5}),
        json!({"count": "3"}),
        json!({}),
    ] {
        let refused = app
            .post_json_authed("/api/v1/admin/canary", &body, &admin)
            .await;
        problem(refused, 422, "validation_failed").await;
    }
    for body in [
        json!({"count": 1, "queue": "canary"}),
        json!({"count": 2.0}),
    ] {
        let accepted = app
            .post_json_authed("/api/v1/admin/canary", &body, &admin)
            .await;
        assert_eq!(accepted.status(), 202, "{body}");
    }
    let rows = audit(&app, &admin).await;
    assert_eq!(rows.len(), 3, "only accepted canaries are audited");
    assert_eq!(rows[2]["action"], "canary");
    assert_eq!(
        rows[2]["target"],
        format!("request:{}", accepted["id"].as_str().expect("id"))
    );
    assert_eq!(rows[2]["details"], json!({"queue": "canary", "count": 5}));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn every_admin_action_is_audited_with_who_what_and_the_request_id(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_with_2fa().await;
    let me = get_json(&app, "/api/v1/me", &admin).await;
    let admin_id = me["id"].as_str().expect("id").to_owned();
    let (user_id, _) = app.create_account(Role::User).await;
    let request = dead_canaries(&app, 3, "boom").await;
    let ids = job_ids(&app, request).await;
    let calls: Vec<(&str, String, Option<Value>, u16)> = vec![
        (
            "PATCH",
            format!("/api/v1/admin/users/{user_id}"),
            Some(json!({"role": "promoter"})),
            200,
        ),
        ("POST", "/api/v1/admin/scans/rescan-all".into(), None, 202),
        (
            "POST",
            format!("/api/v1/admin/jobs/{}/retry", ids[0]),
            None,
            200,
        ),
        (
            "POST",
            format!("/api/v1/admin/jobs/{}/discard", ids[1]),
            None,
            200,
        ),
        (
            "POST",
            "/api/v1/admin/jobs/retry".into(),
            Some(json!({"queue": "canary", "status": "dead"})),
            202,
        ),
        (
            "POST",
            "/api/v1/admin/queues/uploads/pause".into(),
            None,
            200,
        ),
        (
            "POST",
            "/api/v1/admin/queues/uploads/resume".into(),
            None,
            200,
        ),
        (
            "POST",
            "/api/v1/admin/canary".into(),
            Some(json!({"count": 1})),
            202,
        ),
    ];
    for (i, (method, path, body, status)) in calls.iter().enumerate() {
        let mut call = app
            .client
            .request(method.parse().expect("method"), app.url(path))
            .bearer_auth(&admin)
            .header("x-request-id", format!("audit-{i}"));
        if let Some(body) = body {
            call = call.json(body);
        }
        let response = call.send().await.expect("sent");
        assert_eq!(response.status().as_u16(), *status, "{method} {path}");
    }
    let page = get_json(&app, "/api/v1/admin/audit?limit=3", &admin).await;
    let mut rows: Vec<Value> = page["items"].as_array().expect("items").clone();
    let mut cursor = page["next_cursor"].as_str().map(str::to_owned);
    while let Some(next) = cursor {
        let page = get_json(
            &app,
            &format!("/api/v1/admin/audit?limit=3&cursor={next}"),
            &admin,
        )
        .await;
        rows.extend(page["items"].as_array().expect("items").iter().cloned());
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    rows.reverse();
    let seen: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default(),
                r["request_id"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("role_change", "audit-0"),
            ("rescan_all", "audit-1"),
            ("retry", "audit-2"),
            ("discard", "audit-3"),
            ("bulk_retry", "audit-4"),
            ("pause", "audit-5"),
            ("resume", "audit-6"),
            ("canary", "audit-7"),
        ]
    );
    for row in &rows {
        assert_eq!(row["actor"], format!("admin:{admin_id}"), "{row}");
        assert_eq!(row["actor_id"], admin_id.as_str(), "{row}");
        assert!(row["created_at"].is_string());
    }
    assert_eq!(rows[0]["target"], format!("user:{user_id}"));
    assert_eq!(rows[0]["details"]["role"], "promoter");
    let metrics = shared::telemetry::prometheus().render();
    for action in [
        "role_change",
        "rescan_all",
        "retry",
        "discard",
        "bulk_retry",
        "pause",
        "resume",
        "canary",
    ] {
        assert!(
            metrics.contains(&format!(
                "conveyor_admin_actions_total{{action=\"{action}\"}} 1"
            )),
            "{action}: {metrics}"
        );
    }
    // The log is append-only.
    let changed = sqlx::query("UPDATE audit_log SET actor = 'someone else'")
        .execute(&app.state.pool)
        .await;
    assert!(changed.is_err());
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn jobs_are_listed_by_keyset_pages_with_filters_and_never_their_payloads(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_with_2fa().await;
    let dead = dead_canaries(&app, 2, "boom").await;
    let (owner, _) = app.create_account(Role::User).await;
    let queued = app.submit_canaries(owner, 5).await;

    let mut seen = std::collections::HashSet::new();
    let mut path = "/api/v1/admin/jobs?queue=canary&limit=3".to_owned();
    loop {
        let page = get_json(&app, &path, &admin).await;
        for item in page["items"].as_array().expect("items") {
            assert!(item.get("payload").is_none(), "{item}");
            assert!(
                seen.insert(item["id"].as_str().expect("id").to_owned()),
                "{item}"
            );
        }
        match page["next_cursor"].as_str() {
            Some(next) => path = format!("/api/v1/admin/jobs?queue=canary&limit=3&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "every job once");

    let of_request = get_json(
        &app,
        &format!("/api/v1/admin/jobs?request_id={queued}"),
        &admin,
    )
    .await;
    assert_eq!(of_request["items"].as_array().map(Vec::len), Some(5));
    let dead_ones = get_json(&app, "/api/v1/admin/jobs?status=dead", &admin).await;
    let items = dead_ones["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert!(
        items
            .iter()
            .all(|j| j["request_id"] == dead.to_string() && j["last_error"] == "boom")
    );
    assert!(dead_ones["next_cursor"].is_null());
    let none = get_json(&app, "/api/v1/admin/jobs?queue=emails", &admin).await;
    assert_eq!(none["items"], json!([]));

    for bad in [
        "status=lost",
        "queue=nowhere",
        "limit=0",
        "limit=101",
        "cursor=!!",
        "payload=1",
    ] {
        let response = app
            .get_authed(&format!("/api/v1/admin/jobs?{bad}"), &admin)
            .await;
        problem(response, 400, "validation_failed").await;
    }
}

#[test]
fn the_openapi_spec_documents_every_admin_route() {
    let spec: Value = serde_json::from_str(&api::openapi::json()).expect("the spec is JSON");
    for (path, method, statuses) in [
        ("/api/v1/admin/queues", "get", &["200", "403"][..]),
        (
            "/api/v1/admin/queues/{queue}/pause",
            "post",
            &["200", "400", "403", "503"],
        ),
        (
            "/api/v1/admin/queues/{queue}/resume",
            "post",
            &["200", "400", "403", "503"],
        ),
        ("/api/v1/admin/jobs", "get", &["200", "400", "403"]),
        ("/api/v1/admin/jobs/{id}", "get", &["200", "403", "404"]),
        (
            "/api/v1/admin/jobs/{id}/retry",
            "post",
            &["200", "403", "404", "409"],
        ),
        (
            "/api/v1/admin/jobs/{id}/discard",
            "post",
            &["200", "403", "404", "409"],
        ),
        ("/api/v1/admin/jobs/retry", "post", &["202", "403", "422"]),
        (
            "/api/v1/admin/operations/{id}",
            "get",
            &["200", "403", "404"],
        ),
        ("/api/v1/admin/canary", "post", &["202", "403", "422"]),
        ("/api/v1/admin/audit", "get", &["200", "400", "403"]),
        ("/api/v1/admin/schedules", "get", &["200", "403"]),
        (
            "/api/v1/admin/schedules/{name}/pause",
            "post",
            &["200", "403", "404"],
        ),
        (
            "/api/v1/admin/schedules/{name}/resume",
            "post",
            &["200", "403", "404"],
        ),
    ] {
        let operation = &spec["paths"][path][method];
        assert!(operation.is_object(), "{method} {path}");
        assert_eq!(operation["tags"][0], "admin");
        for status in statuses {
            assert!(
                operation["responses"][*status].is_object(),
                "{method} {path} {status}"
            );
        }
    }
    let schemas = &spec["components"]["schemas"];
    for name in [
        "QueueList",
        "QueueView",
        "Page_JobView",
        "JobView",
        "OperationView",
        "Page_AuditEntry",
        "AuditEntry",
        "CanaryRequest",
        "BulkRetryRequest",
    ] {
        assert!(schemas[name].is_object(), "schema {name}");
    }
    assert_eq!(schemas["CanaryQueue"]["enum"], json!(["canary"]));
    assert_eq!(
        schemas["RetryableStatus"]["enum"],
        json!(["dead", "cancelled"])
    );
    assert!(schemas["JobView"]["properties"].get("payload").is_none());
}
