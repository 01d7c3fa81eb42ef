//! Periodic jobs as operators see them: `GET /admin/schedules` with last and next run,
//! pause and resume (audited, admins with a 2FA login only), and the command line.

mod common;

use common::{TestApp, problem, spawn_app};
use serde_json::Value;
use sqlx::PgPool;

async fn schedules(app: &TestApp, token: &str) -> Vec<Value> {
    let response = app.get_authed("/api/v1/admin/schedules", token).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    body["schedules"].as_array().expect("schedules").clone()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn operators_see_the_schedules_and_pause_and_resume_one(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_with_2fa().await;
    let scheduler = app.worker_scheduler().await;

    let list = schedules(&app, &admin).await;
    let names: Vec<&str> = list.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "cleanup_unverified_accounts",
            "prune_retention",
            "sample_queues"
        ]
    );
    assert_eq!(list[2]["every"], "every 5s");
    let prune = &list[1];
    assert_eq!(prune["queue"], "chores");
    assert_eq!(prune["every"], "every 600s");
    assert_eq!(prune["time_zone"], "UTC");
    assert_eq!(prune["paused"], false);
    assert!(prune["next_run_at"].is_string() && prune["last_run_at"].is_null());

    let paused = app
        .post_authed("/api/v1/admin/schedules/prune_retention/pause", &admin)
        .await;
    assert_eq!(paused.status(), 200);
    let paused: Value = paused.json().await.expect("json");
    assert_eq!(paused["paused"], true);
    assert!(
        paused["paused_by"]
            .as_str()
            .is_some_and(|by| by.starts_with("admin:"))
    );

    // Due now: the paused schedule enqueues nothing, the other one its tick.
    sqlx::query("UPDATE schedules SET next_run_at = now() - interval '1 second'")
        .execute(&app.state.pool)
        .await
        .expect("due");
    let ticked = scheduler.tick().await.expect("tick");
    let names: Vec<&str> = ticked.iter().map(|t| t.schedule.as_str()).collect();
    assert_eq!(names, ["cleanup_unverified_accounts", "sample_queues"]);

    let resumed = app
        .post_authed("/api/v1/admin/schedules/prune_retention/resume", &admin)
        .await;
    assert_eq!(resumed.status(), 200);
    // (`sample_queues`, every 5 s, may be due again by now: only prune's ticks count.)
    let ticked: Vec<_> = scheduler
        .tick()
        .await
        .expect("tick")
        .into_iter()
        .filter(|t| t.schedule == "prune_retention")
        .collect();
    assert_eq!(
        ticked.len(),
        1,
        "the missed tick runs once after the resume"
    );

    let list = schedules(&app, &admin).await;
    let prune = &list[1];
    assert_eq!(prune["paused"], false);
    assert_eq!(
        prune["last_job_id"].as_str(),
        ticked[0].job_id.map(|id| id.to_string()).as_deref()
    );
    let job = app
        .get_authed(
            &format!(
                "/api/v1/admin/jobs/{}",
                prune["last_job_id"].as_str().expect("id")
            ),
            &admin,
        )
        .await;
    let job: Value = job.json().await.expect("json");
    assert_eq!(job["queue"], "chores");
    assert!(
        job["request_id"].is_null(),
        "a chore carries out no request"
    );

    let audit: Value = app
        .get_authed("/api/v1/admin/audit?limit=10", &admin)
        .await
        .json()
        .await
        .expect("json");
    let actions: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default(),
                r["target"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("resume", "schedule:prune_retention"),
            ("pause", "schedule:prune_retention")
        ]
    );

    problem(
        app.post_authed("/api/v1/admin/schedules/no_such_thing/pause", &admin)
            .await,
        404,
        "not_found",
    )
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn schedules_are_for_admins_with_a_second_factor(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, email) = app.create_account(shared::domain::Role::Promoter).await;
    let token = app.login(&email, common::PASSWORD).await.access_token;
    problem(
        app.get_authed("/api/v1/admin/schedules", &token).await,
        403,
        "forbidden",
    )
    .await;
    problem(
        app.post_authed("/api/v1/admin/schedules/prune_retention/pause", &token)
            .await,
        403,
        "forbidden",
    )
    .await;
}
