//! Email templates over real HTTP: created and checked (a syntax error names its part
//! and line), versioned on edit, previewed with variables (HTML escaped, a missing
//! variable or a line break in the subject named, a runaway template stopped), kept to
//! the account's own (another's is 404), bounded per role, deleted.

mod common;

use common::{PASSWORD, Session, TestApp, problem, spawn_app};
use serde_json::{Value, json};
use shared::domain::Role;
use sqlx::PgPool;

async fn session(app: &TestApp, role: Role) -> String {
    let (_, email) = app.create_account(role).await;
    let session: Session = app.login(&email, PASSWORD).await;
    session.access_token
}

async fn create(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.post_json_authed("/api/v1/templates", &body, token)
        .await
}

async fn json_of(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    response.json().await.expect("json")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_template_is_created_versioned_on_edit_and_previewed_with_escaping(pool: PgPool) {
    let app = spawn_app(pool).await;
    let token = session(&app, Role::Promoter).await;
    let created = create(
        &app,
        &token,
        json!({
            "name": "welcome",
            "subject": "Welcome, {{ name }}",
            "text": "Hello {{ name }}, your code is {{ code }}.",
            "html": "<p>Hello {{ name }}</p>"
        }),
    )
    .await;
    let location = created.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let created = json_of(created, 201).await;
    assert_eq!(created["version"], 1);
    assert_eq!(created["variables"], json!(["code", "name"]));
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(location, format!("/api/v1/templates/{id}"));

    let edited = app
        .client
        .put(app.url(&format!("/api/v1/templates/{id}")))
        .bearer_auth(&token)
        .json(&json!({"subject": "Hi {{ name }}", "text": "Hi {{ name }}!", "html": "<b>{{ name }}</b>"}))
        .send()
        .await
        .expect("sent");
    let edited = json_of(edited, 200).await;
    assert_eq!(edited["version"], 2);
    assert_eq!(edited["name"], "welcome", "the name stays");

    let hostile = "<script>alert(1)</script>";
    let preview = app
        .post_json_authed(
            &format!("/api/v1/templates/{id}/preview"),
            &json!({"variables": {"name": hostile}}),
            &token,
        )
        .await;
    let preview = json_of(preview, 200).await;
    assert_eq!(preview["version"], 2);
    assert_eq!(preview["subject"], format!("Hi {hostile}"));
    assert_eq!(preview["text"], format!("Hi {hostile}!"));
    assert_eq!(
        preview["html"], "<b>&lt;script&gt;alert(1)&lt;&#x2f;script&gt;</b>",
        "escaped in HTML"
    );
    // The first version is kept and can still be rendered.
    let first = app
        .post_json_authed(
            &format!("/api/v1/templates/{id}/preview"),
            &json!({"version": 1, "variables": {"name": "Ada", "code": "42"}}),
            &token,
        )
        .await;
    let first = json_of(first, 200).await;
    assert_eq!(first["text"], "Hello Ada, your code is 42.");

    let list = json_of(app.get_authed("/api/v1/templates", &token).await, 200).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["items"][0]["version"], 2);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn template_errors_name_the_part_the_line_and_the_variable(pool: PgPool) {
    let app = spawn_app(pool).await;
    let token = session(&app, Role::Promoter).await;
    let broken = create(
        &app,
        &token,
        json!({"name": "broken", "subject": "Hi", "text": "one\ntwo {% if %}\nthree"}),
    )
    .await;
    let body = problem(broken, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "text");
    let message = body["errors"][0]["message"].as_str().expect("message");
    assert!(message.starts_with("text: line 2:"), "{message}");

    let created = json_of(
        create(
            &app,
            &token,
            json!({"name": "code", "subject": "Code for {{ name }}", "text": "{{ code }}"}),
        )
        .await,
        201,
    )
    .await;
    let id = created["id"].as_str().expect("id");
    let preview = |variables: Value| {
        let app = &app;
        let token = &token;
        async move {
            app.post_json_authed(
                &format!("/api/v1/templates/{id}/preview"),
                &json!({ "variables": variables }),
                token,
            )
            .await
        }
    };
    let missing = problem(
        preview(json!({"name": "Ada"})).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(missing["errors"][0]["field"], "variables.code");
    let injected = problem(
        preview(json!({"name": "Ada\r\nBcc: everyone@example.org", "code": "1"})).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(injected["errors"][0]["field"], "variables.name");

    // A template that never ends, or writes without end, is stopped.
    let runaway = json_of(
        create(
            &app,
            &token,
            json!({"name": "runaway", "subject": "x",
                   "text": "{% for i in range(100000) %}{% for j in range(100000) %}.{% endfor %}{% endfor %}"}),
        )
        .await,
        201,
    )
    .await;
    let id = runaway["id"].as_str().expect("id");
    let stopped = app
        .post_json_authed(
            &format!("/api/v1/templates/{id}/preview"),
            &json!({}),
            &token,
        )
        .await;
    let stopped = problem(stopped, 422, "validation_failed").await;
    assert!(
        stopped["detail"]
            .as_str()
            .is_some_and(|d| d.contains("too much work")),
        "{stopped}"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn templates_are_the_accounts_own_and_bounded_by_role(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, user) = app.register_user().await;
    let other = session(&app, Role::Promoter).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let created = create(
            &app,
            &user.access_token,
            json!({"name": format!("t{n}"), "subject": "s", "text": "t"}),
        )
        .await;
        ids.push(
            json_of(created, 201).await["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    let sixth = create(
        &app,
        &user.access_token,
        json!({"name": "t5", "subject": "s", "text": "t"}),
    )
    .await;
    problem(sixth, 409, "conflict").await;
    let taken = create(
        &app,
        &other,
        json!({"name": "t0", "subject": "s", "text": "t"}),
    )
    .await;
    assert_eq!(taken.status(), 201, "names are per account");
    let again = create(
        &app,
        &other,
        json!({"name": "t0", "subject": "s", "text": "t"}),
    )
    .await;
    problem(again, 409, "conflict").await;

    // Another account's template does not exist for the caller.
    let theirs = app
        .get_authed(&format!("/api/v1/templates/{}", ids[0]), &other)
        .await;
    problem(theirs, 404, "not_found").await;
    let preview = app
        .post_json_authed(
            &format!("/api/v1/templates/{}/preview", ids[0]),
            &json!({}),
            &other,
        )
        .await;
    problem(preview, 404, "not_found").await;

    // Deleted, it is gone, and the account may create another.
    let deleted = app
        .client
        .delete(app.url(&format!("/api/v1/templates/{}", ids[0])))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(deleted.status(), 204);
    problem(
        app.get_authed(&format!("/api/v1/templates/{}", ids[0]), &user.access_token)
            .await,
        404,
        "not_found",
    )
    .await;
    let sixth = create(
        &app,
        &user.access_token,
        json!({"name": "t5", "subject": "s", "text": "t"}),
    )
    .await;
    assert_eq!(sixth.status(), 201);
}

/// `POST /emails` with a template: every problem is a 422 at submission naming its
/// field, and nothing is queued — a template used with other content, an unknown one
/// (or another account's: not found either), a missing variable, a line break in a
/// subject variable, a render that never ends or grows past a message's size, and
/// variables without a template.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_message_from_a_template_is_refused_at_submission_naming_the_problem(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let token = session(&app, Role::Promoter).await;
    let other = session(&app, Role::Promoter).await;
    for (name, text) in [
        ("code", "Your code: {{ code }}"),
        (
            "endless",
            "{% for i in range(100000) %}{% for j in range(100000) %}.{% endfor %}{% endfor %}",
        ),
        ("huge", "{% for i in range(2000) %}{{ block }}{% endfor %}"),
    ] {
        let body = json!({"name": name, "subject": "Hi {{ name }}", "text": text});
        json_of(create(&app, &token, body).await, 201).await;
    }
    let theirs = json_of(
        create(
            &app,
            &other,
            json!({"name": "theirs", "subject": "S", "text": "T"}),
        )
        .await,
        201,
    )
    .await;
    let send = |body: Value| {
        let app = &app;
        let token = &token;
        async move {
            let mut body = body;
            body["to"] = json!(["ada@example.org"]);
            let response = app.post_json_authed("/api/v1/emails", &body, token).await;
            problem(response, 422, "validation_failed").await
        }
    };
    let field = |body: &Value| body["errors"][0]["field"].as_str().map(str::to_owned);
    let cases = [
        (
            json!({"template": "code", "subject": "mine", "variables": {"name": "A", "code": 1}}),
            "subject",
        ),
        (json!({"template": "nope"}), "template"),
        (
            json!({"template": theirs["id"], "variables": {}}),
            "template",
        ),
        (
            json!({"template": "code", "template_version": 9, "variables": {"name": "A", "code": 1}}),
            "template_version",
        ),
        (
            json!({"template": "code", "variables": {"name": "A"}}),
            "variables.code",
        ),
        (
            json!({"template": "code", "variables": {"name": "A\nBcc: x@example.org", "code": 1}}),
            "variables.name",
        ),
        (
            json!({"template": "code", "variables": "name=A"}),
            "variables",
        ),
        (
            json!({"template": "endless", "variables": {"name": "A"}}),
            "template.text",
        ),
        (
            json!({"template": "huge", "variables": {"name": "A", "block": "x".repeat(1024)}}),
            "template.text",
        ),
        (
            json!({"subject": "S", "text": "T", "variables": {"name": "A"}}),
            "variables",
        ),
        (json!({"subject": "S"}), "text"),
    ];
    for (body, expected) in cases {
        let refused = send(body.clone()).await;
        assert_eq!(
            field(&refused).as_deref(),
            Some(expected),
            "{body}: {refused}"
        );
    }
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE queue = 'emails'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(queued, 0, "nothing refused was queued");

    // An HTML-only message gets a text part made from it.
    let accepted = app
        .post_json_authed(
            "/api/v1/emails",
            &json!({"to": ["ada@example.org"], "subject": "S", "html": "<p>Hello <b>Ada</b></p>"}),
            &token,
        )
        .await;
    assert_eq!(accepted.status(), 202);
}
