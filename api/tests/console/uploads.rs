//! The console's uploads pages over real HTTP (a module of `console.rs`, sharing its
//! `Browser`): every account's uploads listed and filtered, one upload's facts (live,
//! never its content), and an admin's rescan through the audited service. Uploads go
//! through the real `POST /api/v1/uploads`; what the worker would do next (the move to
//! storage, a verdict, a rejection) is written with its repository functions.

use super::*;
use sha2::Digest as _;
use shared::db::uploads::{self as repo, NewUpload};
use shared::domain::{UploadLocation, UploadStatus};
use uuid::Uuid;

/// An infected file's matched rule, as the scanner names it.
const RULE: &str = "Conveyor.Test.Macro-1";

/// Two accounts' uploads, and an admin signed in to the console.
struct Uploads {
    app: TestApp,
    pool: PgPool,
    browser: Browser,
    admin: Uuid,
    alice: Uuid,
    bob: Uuid,
    /// Alice's, clean and stored.
    clean: Uuid,
    /// Alice's, infected and quarantined.
    infected: Uuid,
    /// Bob's, still in staging.
    pending: Uuid,
}

/// What the infected upload holds: never on a console page.
const INFECTED_TEXT: &str = "content-marker-7f3a: never shown by the console";

/// An account of `role` (its address confirmed) and its access token.
async fn user(app: &TestApp) -> (Uuid, String) {
    let (id, email) = app.create_account(Role::User).await;
    (id, app.login(&email, PASSWORD).await.access_token)
}

/// A file through `POST /api/v1/uploads`: pending_scan, in staging.
async fn upload(app: &TestApp, token: &str, name: &str, text: &str) -> Uuid {
    let body = app.upload_ok(token, name, text.as_bytes().to_vec()).await;
    body["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("an upload id")
}

/// As the worker would: moved to storage, then the verdict of a scan.
async fn scanned(pool: &PgPool, id: Uuid, rules: &[&str]) {
    assert!(repo::mark_stored(pool, id).await.expect("stored"));
    let (status, location) = if rules.is_empty() {
        (UploadStatus::Clean, UploadLocation::Stored)
    } else {
        (UploadStatus::Infected, UploadLocation::Quarantine)
    };
    let rules: Vec<String> = rules.iter().map(|r| (*r).to_owned()).collect();
    repo::record_verdict(pool, id, status, location, &rules)
        .await
        .expect("verdict");
}

async fn setup(pool: PgPool) -> Uploads {
    let root = harness::system::scratch_dir("console-uploads");
    let storage = root.to_str().expect("a UTF-8 path").to_owned();
    let app = spawn_app_with(
        pool.clone(),
        test_config(&[("STORAGE_URL", storage.as_str())]),
        None,
    )
    .await;
    let (alice, alice_token) = user(&app).await;
    let (bob, bob_token) = user(&app).await;
    let clean = upload(&app, &alice_token, "notes.txt", "plain notes").await;
    scanned(&pool, clean, &[]).await;
    let infected = upload(&app, &alice_token, "invoice.txt", INFECTED_TEXT).await;
    scanned(&pool, infected, &[RULE]).await;
    let pending = upload(&app, &bob_token, "later.txt", "not yet stored").await;
    let (admin, email, secret) = enrolled_account(&app, Role::Admin).await;
    let mut browser = Browser::new(&app);
    assert_eq!(browser.sign_in(&email, &secret).await.status(), 303);
    Uploads {
        app,
        pool,
        browser,
        admin,
        alice,
        bob,
        clean,
        infected,
        pending,
    }
}

/// The uploads a page lists, in its order.
fn listed(page: &str) -> Vec<Uuid> {
    page.split(r#"data-upload=""#)
        .skip(1)
        .filter_map(|rest| rest.get(..36)?.parse().ok())
        .collect()
}

/// `scans` jobs of `upload`.
async fn scan_jobs(pool: &PgPool, upload: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE queue = 'scans' AND payload->>'upload_id' = $1",
    )
    .bind(upload.to_string())
    .fetch_one(pool)
    .await
    .expect("jobs")
}

/// Audit rows an admin wrote: (action, target, details).
async fn audited(pool: &PgPool) -> Vec<(String, String, serde_json::Value)> {
    sqlx::query_as(
        "SELECT action, target, details FROM audit_log WHERE actor LIKE 'admin:%' \
         ORDER BY created_at",
    )
    .fetch_all(pool)
    .await
    .expect("audit")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_admin_lists_every_accounts_uploads_filtered_by_status_and_account(pool: PgPool) {
    let mut s = setup(pool).await;

    let all = html(s.browser.get("/console/uploads").await, 200).await;
    assert_eq!(listed(&all), vec![s.pending, s.infected, s.clean], "{all}");
    assert!(all.contains(r#"<span class="verdict infected">infected</span>"#));
    assert!(all.contains(r#"<span class="verdict pending_scan">pending scan</span>"#));
    assert!(all.contains(RULE), "the matched rule: {all}");
    assert!(all.contains("invoice.txt"));
    assert!(all.contains(&format!(r#"href="/console/uploads/{}""#, s.clean)));
    assert!(!all.contains(r#"rel="next""#), "one page: {all}");

    let infected = html(s.browser.get("/console/uploads?status=infected").await, 200).await;
    assert_eq!(listed(&infected), vec![s.infected]);
    let bobs = html(
        s.browser
            .get(&format!("/console/uploads?owner={}", s.bob))
            .await,
        200,
    )
    .await;
    assert_eq!(listed(&bobs), vec![s.pending]);
    let alices_clean = html(
        s.browser
            .get(&format!("/console/uploads?status=clean&owner={}", s.alice))
            .await,
        200,
    )
    .await;
    assert_eq!(listed(&alices_clean), vec![s.clean]);
    let none = html(
        s.browser
            .get(&format!("/console/uploads?status=clean&owner={}", s.bob))
            .await,
        200,
    )
    .await;
    assert!(none.contains("No upload matches."), "{none}");

    // Careless input: said plainly, never a 500.
    let page = html(s.browser.get("/console/uploads?status=exploded").await, 422).await;
    assert!(page.contains("no upload status named exploded"), "{page}");
    let page = html(s.browser.get("/console/uploads?owner=bob").await, 422).await;
    assert!(page.contains("bob is not an account id"), "{page}");
    html(s.browser.get("/console/uploads?cursor=%%%").await, 422).await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_list_pages_through_every_upload_fifty_at_a_time(pool: PgPool) {
    let mut s = setup(pool).await;
    let request = repo::find(&s.pool, s.clean, None)
        .await
        .expect("read")
        .and_then(|row| row.request_id)
        .expect("its request");
    for i in 0..52u8 {
        let name = format!("bulk-{i}.txt");
        let inserted = repo::insert(
            &s.pool,
            &NewUpload {
                id: Uuid::now_v7(),
                owner_id: s.alice,
                request_id: request,
                file_name: &name,
                description: None,
                size_bytes: 10,
                sha256: &[i; 32],
                file_type: "text",
            },
        )
        .await
        .expect("inserted");
        assert!(inserted.is_some());
    }

    let first = html(s.browser.get("/console/uploads").await, 200).await;
    let first_ids = listed(&first);
    assert_eq!(first_ids.len(), 50);
    let link = first
        .split(r#"<a href=""#)
        .find_map(|part| {
            let (href, tail) = part.split_once('"')?;
            tail.starts_with(r#" rel="next""#)
                .then(|| href.replace("&amp;", "&"))
        })
        .expect("the next page's address");
    assert!(link.starts_with("/console/uploads?"), "{link}");
    let second = html(s.browser.get(&link).await, 200).await;
    let second_ids = listed(&second);
    assert_eq!(second_ids.len(), 55 - 50, "{second}");
    assert!(!second.contains(r#"rel="next""#), "the last page");
    let mut every: Vec<Uuid> = first_ids.into_iter().chain(second_ids).collect();
    assert_eq!(every.last(), Some(&s.clean), "the oldest comes last");
    every.sort();
    every.dedup();
    assert_eq!(every.len(), 55, "no upload twice, none left out");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_admin_opens_an_upload_and_sees_its_facts_live_never_its_content(pool: PgPool) {
    let mut s = setup(pool).await;
    let row = repo::find(&s.pool, s.infected, None)
        .await
        .expect("read")
        .expect("the upload");
    let request = row.request_id.expect("its request");
    let digest: String = sha2::Sha256::digest(INFECTED_TEXT.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    let page = html(
        s.browser
            .get(&format!("/console/uploads/{}", s.infected))
            .await,
        200,
    )
    .await;
    assert!(page.contains(&digest), "its SHA-256: {page}");
    assert!(page.contains("In quarantine"), "{page}");
    assert!(page.contains(RULE));
    assert!(page.contains(&format!(r#"href="/console/requests/{request}""#)));
    assert!(page.contains(&format!(r#"href="/console/uploads?owner={}""#, s.alice)));
    assert!(page.contains(&format!(
        r#"data-live="/console/live/uploads/{}""#,
        s.infected
    )));
    assert!(page.contains(&format!(
        r#"action="/console/uploads/{}/rescan""#,
        s.infected
    )));
    assert!(!page.contains("content-marker-7f3a"), "never the content");

    // Its live region's stream sends the facts at once.
    let stream = s
        .browser
        .client
        .get(format!(
            "{}/console/live/uploads/{}",
            s.browser.base, s.infected
        ))
        .header("cookie", s.browser.cookie_header())
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("sent");
    assert_eq!(stream.status(), 200);
    let mut body = stream.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream stays open")
            .expect("bytes");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.starts_with("event: replace\n"), "{text}");
    assert!(text.contains(&digest), "{text}");
    assert!(text.contains(r#"id="rescan""#), "{text}");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_admin_rescans_any_accounts_upload_through_the_audited_service(pool: PgPool) {
    let mut s = setup(pool).await;
    assert_eq!(scan_jobs(&s.pool, s.infected).await, 0);

    let done = s
        .browser
        .post(&format!("/console/uploads/{}/rescan", s.infected), &[])
        .await;
    assert_eq!(done.status(), 303);
    let back = location(&done).to_owned();
    let prefix = format!("/console/uploads/{}?rescan=", s.infected);
    let request: Uuid = back
        .strip_prefix(&prefix)
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("back to the upload's page: {back}"));

    assert_eq!(scan_jobs(&s.pool, s.infected).await, 1, "a scan is queued");
    let (owner, kind, total): (Uuid, String, i32) =
        sqlx::query_as("SELECT owner_id, kind, total FROM requests WHERE id = $1")
            .bind(request)
            .fetch_one(&s.pool)
            .await
            .expect("the rescan's request");
    assert_eq!(
        (owner, kind.as_str(), total),
        (s.admin, "scan", 1),
        "the admin's request"
    );
    let job_request: Option<Uuid> = sqlx::query_scalar(
        "SELECT request_id FROM jobs WHERE queue = 'scans' AND payload->>'upload_id' = $1",
    )
    .bind(s.infected.to_string())
    .fetch_one(&s.pool)
    .await
    .expect("the scan job");
    assert_eq!(job_request, Some(request));

    let audit = audited(&s.pool).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    let (action, target, details) = &audit[0];
    assert_eq!(action, "rescan");
    assert_eq!(target, &format!("upload:{}", s.infected));
    assert_eq!(details["owner_id"], s.alice.to_string());
    assert_eq!(details["request_id"], request.to_string());

    let page = html(s.browser.get(&back).await, 200).await;
    assert!(page.contains("Rescan queued as request"), "{page}");
    assert!(page.contains(&format!(r#"href="/console/requests/{request}""#)));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_staged_or_rejected_upload_is_not_rescanned_and_the_page_says_why(pool: PgPool) {
    let mut s = setup(pool).await;

    let page = html(
        s.browser
            .get(&format!("/console/uploads/{}", s.pending))
            .await,
        200,
    )
    .await;
    assert!(page.contains(r#"id="rescan-unavailable""#), "{page}");
    assert!(!page.contains(r#"id="rescan""#), "no button: {page}");
    let refused = s
        .browser
        .post(&format!("/console/uploads/{}/rescan", s.pending), &[])
        .await;
    let page = html(refused, 409).await;
    assert!(page.contains("still in staging"), "{page}");
    assert!(page.contains(&format!(r#"href="/console/uploads/{}""#, s.pending)));

    assert!(
        repo::reject(&s.pool, s.pending, "the staged object's checksum differs")
            .await
            .expect("rejected")
    );
    let page = html(
        s.browser
            .get(&format!("/console/uploads/{}", s.pending))
            .await,
        200,
    )
    .await;
    assert!(page.contains("checksum differs"), "its error: {page}");
    let refused = s
        .browser
        .post(&format!("/console/uploads/{}/rescan", s.pending), &[])
        .await;
    let page = html(refused, 409).await;
    assert!(page.contains("rejected"), "{page}");

    assert_eq!(scan_jobs(&s.pool, s.pending).await, 0);
    assert!(audited(&s.pool).await.is_empty());
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_rescan_posted_from_another_site_is_refused(pool: PgPool) {
    let s = setup(pool).await;
    let forged = reqwest::Client::new()
        .post(s.app.url(&format!("/console/uploads/{}/rescan", s.clean)))
        .header("cookie", s.browser.cookie_header())
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .expect("sent");
    let page = html(forged, 403).await;
    assert!(page.contains("console's own pages"), "{page}");
    assert_eq!(scan_jobs(&s.pool, s.clean).await, 0);
    assert!(audited(&s.pool).await.is_empty());
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_bad_upload_id_is_a_404_page_never_a_500(pool: PgPool) {
    let mut s = setup(pool).await;
    let unknown = Uuid::now_v7();
    for path in [
        "/console/uploads/not-a-uuid".to_owned(),
        format!("/console/uploads/{unknown}"),
        "/console/live/uploads/not-a-uuid".to_owned(),
    ] {
        let page = html(s.browser.get(&path).await, 404).await;
        assert!(
            page.contains("There is nothing at this address."),
            "{path}: {page}"
        );
    }
    for path in [
        "/console/uploads/not-a-uuid/rescan".to_owned(),
        format!("/console/uploads/{unknown}/rescan"),
    ] {
        html(s.browser.post(&path, &[]).await, 404).await;
    }
    assert!(audited(&s.pool).await.is_empty());
}
