//! Uploads and scans through the api's real router and the worker runtime in process,
//! with a real clamd (its own process per test, loaded with `rules/`) and real
//! storage: a directory of the test's own, or an S3-compatible server (moto).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt as _;
use harness::app::{TestApp, closed_port, problem, spawn_app_with, test_config};
use harness::clamd::ClamdServer;
use harness::eventually;
use harness::fixtures::{self, EICAR, Entry};
use harness::s3::MotoS3;
use harness::system::{System, scratch_dir};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// The api in process, with storage and a clamd of the test's own.
struct Setup {
    app: TestApp,
    clamd: ClamdServer,
    token: String,
    /// The storage root (filesystem backend).
    root: Option<PathBuf>,
    _s3: Option<MotoS3>,
}

enum Backend {
    Filesystem,
    S3,
}

async fn setup(pool: PgPool, backend: Backend, overrides: &[(&str, &str)]) -> Setup {
    let clamd = ClamdServer::spawn().await;
    let clamd_addr = clamd.address();
    let (root, s3) = match backend {
        Backend::Filesystem => (Some(scratch_dir("storage")), None),
        Backend::S3 => (None, Some(MotoS3::start().await)),
    };
    let mut vars: Vec<(String, String)> = vec![
        ("CLAMD_ADDR".into(), clamd_addr),
        ("CLAMD_TIMEOUT_SECS".into(), "5".into()),
        ("SCANS_RETRY_BASE_MS".into(), "100".into()),
        ("SCANS_RETRY_CAP_MS".into(), "300".into()),
        ("UPLOADS_RETRY_BASE_MS".into(), "100".into()),
        ("UPLOADS_RETRY_CAP_MS".into(), "300".into()),
        ("DISPATCH_INTERVAL_MS".into(), "100".into()),
    ];
    if let Some(root) = &root {
        vars.push(("STORAGE_URL".into(), root.display().to_string()));
    }
    if let Some(s3) = &s3 {
        vars.extend([
            ("STORAGE_URL".into(), s3.url()),
            ("S3_ENDPOINT".into(), s3.endpoint()),
            ("S3_ALLOW_HTTP".into(), "true".into()),
            ("S3_ACCESS_KEY_ID".into(), "moto-test-key".into()),
            ("S3_SECRET_ACCESS_KEY".into(), "moto-test-secret".into()),
        ]);
    }
    for (key, value) in overrides {
        vars.retain(|(k, _)| k != key);
        vars.push(((*key).to_owned(), (*value).to_owned()));
    }
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = spawn_app_with(pool, test_config(&pairs), None).await;
    let token = app.register_user().await.1.access_token;
    Setup {
        app,
        clamd,
        token,
        root,
        _s3: s3,
    }
}

impl Setup {
    /// `POST /uploads` with `form`, as the setup's user.
    fn post_upload(
        &self,
        form: reqwest::multipart::Form,
    ) -> impl Future<Output = reqwest::Result<reqwest::Response>> + use<> {
        self.app
            .client
            .post(self.app.url("/api/v1/uploads"))
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
    }

    async fn upload(
        &self,
        name: &str,
        content_type: Option<&str>,
        bytes: Vec<u8>,
    ) -> reqwest::Response {
        self.app
            .upload(&self.token, name, content_type, bytes)
            .await
    }

    async fn upload_ok(&self, name: &str, bytes: Vec<u8>) -> Uuid {
        let body = self.app.upload_ok(&self.token, name, bytes).await;
        assert_eq!(body["status"], "pending_scan", "{body}");
        body["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("an id")
    }

    async fn show(&self, id: Uuid) -> Value {
        let response = self
            .app
            .get_authed(&format!("/api/v1/uploads/{id}"), &self.token)
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    }

    async fn content(&self, id: Uuid) -> reqwest::Response {
        self.app
            .get_authed(&format!("/api/v1/uploads/{id}/content"), &self.token)
            .await
    }

    /// Object files under `area/` of the filesystem backend.
    fn objects(&self, area: &str) -> Vec<String> {
        let Some(root) = &self.root else {
            return Vec::new();
        };
        std::fs::read_dir(root.join(area))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Every file under `root`, relative, to prove nothing landed outside the areas.
fn tree(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(relative) = path.strip_prefix(root) {
                found.push(relative.display().to_string());
            }
        }
    }
    found
}

async fn png_round_trip(setup: Setup) {
    let png = fixtures::small_png(7);
    let response = setup
        .upload("holiday photo.png", Some("image/png"), png.clone())
        .await;
    assert_eq!(response.status(), 202);
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("Location");
    let body: Value = response.json().await.expect("json");
    let id: Uuid = body["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");
    assert_eq!(location, format!("/api/v1/uploads/{id}"));
    assert_eq!(body["file_type"], "png");
    assert_eq!(body["size_bytes"], png.len());
    let sha = shared::crypto::sha256(&png)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    assert_eq!(body["sha256"], sha);
    // Before the worker: not scanned yet.
    problem(setup.content(id).await, 409, "scan_pending").await;

    setup.app.run_pending_jobs().await;
    let upload = setup.show(id).await;
    assert_eq!(upload["status"], "clean", "{upload}");
    assert_eq!(upload["rules"], json!([]));
    assert_eq!(upload["scans"], 1);
    let request = setup
        .app
        .get_authed(
            &format!(
                "/api/v1/requests/{}",
                body["request_id"].as_str().expect("request")
            ),
            &setup.token,
        )
        .await
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(request["status"], "succeeded", "{request}");
    assert_eq!(
        request["total"], 2,
        "the upload job and its scan: {request}"
    );

    let download = setup.content(id).await;
    assert_eq!(download.status(), 200);
    let header = |name: &str| {
        download
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "image/png");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert!(
        header("content-disposition").starts_with("attachment; filename=\"holiday photo.png\""),
        "{}",
        header("content-disposition")
    );
    let bytes = download.bytes().await.expect("body");
    assert_eq!(bytes.as_ref(), png.as_slice(), "byte-identical");
    assert!(setup.objects("staging").is_empty(), "staging is tidied");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_png_travels_to_clean_and_downloads_identical_on_the_filesystem(pool: PgPool) {
    let setup = setup(pool, Backend::Filesystem, &[]).await;
    let root = setup.root.clone().expect("filesystem root");
    png_round_trip(setup).await;
    let files = tree(&root);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with("stored/"), "{files:?}");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_png_travels_to_clean_and_downloads_identical_on_s3(pool: PgPool) {
    png_round_trip(setup(pool, Backend::S3, &[]).await).await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn hostile_files_end_infected_quarantined_and_are_never_served(pool: PgPool) {
    let setup = setup(pool, Backend::Filesystem, &[]).await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("eicar.txt", EICAR.to_vec(), "EICAR"),
        (
            "traversal.zip",
            fixtures::zip(&[Entry::File("../../etc/cron.d/evil", b"* * * * * root sh")]),
            "Conveyor.Archive.PathTraversal",
        ),
        (
            "link.zip",
            fixtures::zip(&[Entry::Symlink("passwd", "/etc/passwd")]),
            "Conveyor.Archive.Symlink",
        ),
        ("bomb.zip", fixtures::zip_bomb(20), "Conveyor.Archive.Bomb"),
        (
            "flood.png",
            fixtures::png(100_000, 100_000, 1, 1),
            "Conveyor.Image.PixelFlood",
        ),
        (
            "script.png",
            [
                fixtures::small_png(9),
                b"<script>alert(1)</script>".to_vec(),
            ]
            .concat(),
            "Conveyor.Image.EmbeddedScript",
        ),
    ];
    let mut ids = Vec::new();
    for (name, bytes, _) in &cases {
        ids.push(setup.upload_ok(name, bytes.clone()).await);
    }
    setup.app.run_pending_jobs().await;
    for ((name, _, rule), id) in cases.iter().zip(&ids) {
        let upload = setup.show(*id).await;
        assert_eq!(upload["status"], "infected", "{name}: {upload}");
        let rules = upload["rules"].as_array().expect("rules");
        assert!(
            rules
                .iter()
                .any(|r| r.as_str().is_some_and(|r| r.contains(rule))),
            "{name}: {upload}"
        );
        problem(setup.content(*id).await, 403, "quarantined").await;
    }
    let quarantined = setup.objects("quarantine");
    assert_eq!(quarantined.len(), cases.len(), "{quarantined:?}");
    assert!(setup.objects("stored").is_empty());
    let metrics = shared::telemetry::prometheus().render();
    assert!(
        metrics.contains("conveyor_scans_total{verdict=\"infected\"}"),
        "{metrics}"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn refused_types_are_415_and_nothing_is_kept(pool: PgPool) {
    let setup = setup(pool, Backend::Filesystem, &[]).await;
    let elf = [b"\x7fELF\x02\x01\x01\x00".as_slice(), &[0u8; 120]].concat();
    let cases: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        ("cat.png", None, elf.clone()),
        ("cat.png", Some("image/png"), elf),
        (
            "report.png",
            Some("application/pdf"),
            fixtures::small_png(1),
        ),
        ("photo.pdf", None, fixtures::small_png(2)),
        (
            "page.html",
            Some("text/html"),
            b"<html><body>hi</body></html>".to_vec(),
        ),
    ];
    for (name, content_type, bytes) in cases {
        let response = setup.upload(name, content_type, bytes).await;
        problem(response, 415, "unsupported_media_type").await;
    }
    // Not multipart at all.
    let response = setup
        .app
        .client
        .post(setup.app.url("/api/v1/uploads"))
        .bearer_auth(&setup.token)
        .json(&json!({"file": "nope"}))
        .send()
        .await
        .expect("sent");
    problem(response, 415, "unsupported_media_type").await;
    assert!(
        setup.objects("staging").is_empty(),
        "partial objects removed"
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM uploads")
        .fetch_one(&setup.app.state.pool)
        .await
        .expect("count");
    assert_eq!(count, 0);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn hostile_file_names_are_stored_as_metadata_only(pool: PgPool) {
    let setup = setup(pool, Backend::Filesystem, &[]).await;
    let root = setup.root.clone().expect("root");
    let long = format!("{}.png", "a".repeat(300));
    let names = [
        "../../etc/passwd.png",
        "a/b\\c.png",
        long.as_str(),
        "nul\0byte.png",
        "new\nline.png",
    ];
    let mut accepted = 0;
    for (i, name) in names.iter().enumerate() {
        let seed = u8::try_from(i).expect("small");
        let response = setup.upload(name, None, fixtures::small_png(seed)).await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("json");
        println!("{name:?} → {status} {}", body["file_name"]);
        match status {
            202 => {
                accepted += 1;
                let stored = body["file_name"].as_str().expect("name");
                assert!(
                    !stored.contains(['/', '\\', '\0', '\n', '\r'])
                        && !stored.contains("..")
                        && !stored.is_empty()
                        && stored.len() <= 255,
                    "{name:?} → {stored:?}"
                );
            }
            // A raw control character can break the part's header: refused, cleanly.
            400 => assert_eq!(body["code"], "validation_failed", "{name:?}: {body}"),
            other => panic!("{name:?}: {other} {body}"),
        }
    }
    assert!(accepted >= 3, "the printable names are accepted");
    setup.app.run_pending_jobs().await;
    for file in tree(&root) {
        let (area, name) = file.split_once('/').expect("area/name");
        assert!(
            matches!(area, "stored" | "staging" | "quarantine"),
            "{file}"
        );
        assert!(name.parse::<Uuid>().is_ok(), "server-made name: {file}");
    }
    assert_eq!(tree(&root).len(), accepted);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_body_past_the_limit_is_413_and_its_partial_object_is_removed(pool: PgPool) {
    let setup = setup(
        pool,
        Backend::Filesystem,
        &[("UPLOAD_MAX_BYTES", "1048576")],
    )
    .await;
    let mut big = fixtures::small_png(3);
    big.resize(1024 * 1024 + 1, 0);
    let response = setup.upload("big.png", Some("image/png"), big).await;
    problem(response, 413, "payload_too_large").await;
    assert!(setup.objects("staging").is_empty());
    // Exactly at the limit is fine.
    let mut fits = fixtures::small_png(4);
    fits.resize(1024 * 1024, 0);
    setup.upload_ok("fits.png", fits).await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn quota_and_hourly_limits_refuse_and_the_same_content_is_one_upload(pool: PgPool) {
    let setup = setup(
        pool,
        Backend::Filesystem,
        &[("UPLOAD_QUOTA_BYTES", "20000"), ("UPLOADS_PER_HOUR", "4")],
    )
    .await;
    let first = setup.upload_ok("one.png", fixtures::small_png(1)).await;
    // Same bytes again: the first upload back, 200, nothing new stored.
    let again = setup.upload("copy.png", None, fixtures::small_png(1)).await;
    assert_eq!(again.status(), 200);
    let body: Value = again.json().await.expect("json");
    assert_eq!(body["id"], first.to_string());
    assert_eq!(body["file_name"], "one.png");
    assert_eq!(setup.objects("staging").len(), 1, "the copy was discarded");

    // 20,000 bytes of quota: a second 3 KiB image fits, a 19 KB file does not.
    setup.upload_ok("two.png", fixtures::small_png(2)).await;
    let mut big = fixtures::small_png(3);
    big.resize(19_000, 0);
    problem(
        setup.upload("big.png", None, big).await,
        413,
        "quota_exceeded",
    )
    .await;
    // Four uploads per hour (refused and duplicate ones make no row): two more
    // pass, the fifth is 429.
    setup.upload_ok("three.png", fixtures::small_png(4)).await;
    setup.upload_ok("four.png", fixtures::small_png(5)).await;
    let response = setup.upload("five.png", None, fixtures::small_png(6)).await;
    assert!(response.headers().contains_key("retry-after"));
    problem(response, 429, "rate_limited").await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn another_users_upload_is_not_found_and_lists_are_paged(pool: PgPool) {
    let setup = setup(pool, Backend::Filesystem, &[]).await;
    let mut ids = Vec::new();
    for seed in 0..5 {
        ids.push(
            setup
                .upload_ok(&format!("{seed}.png"), fixtures::small_png(seed))
                .await,
        );
    }
    let stranger = setup.app.register_user().await.1.access_token;
    for path in [
        format!("/api/v1/uploads/{}", ids[0]),
        format!("/api/v1/uploads/{}/content", ids[0]),
    ] {
        problem(
            setup.app.get_authed(&path, &stranger).await,
            404,
            "not_found",
        )
        .await;
    }
    let response = setup
        .app
        .post_json_authed("/api/v1/scans", &json!({"upload_id": ids[0]}), &stranger)
        .await;
    problem(response, 404, "not_found").await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/uploads?limit=2&cursor={c}"),
            None => "/api/v1/uploads?limit=2".to_owned(),
        };
        let page: Value = setup
            .app
            .get_authed(&path, &setup.token)
            .await
            .json()
            .await
            .expect("json");
        for item in page["items"].as_array().expect("items") {
            seen.push(
                item["id"]
                    .as_str()
                    .expect("id")
                    .parse::<Uuid>()
                    .expect("uuid"),
            );
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each once");
    let empty: Value = setup
        .app
        .get_authed("/api/v1/uploads", &stranger)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(empty["items"], json!([]));
}

/// clamd down costs no attempts: the scans queue waits for it (blocked on `clamd`),
/// the upload stays pending (never clean), and the verdict comes once clamd answers,
/// on the scan's first counted attempt.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn with_the_scanner_down_uploads_stay_pending_and_finish_clean_when_it_returns(pool: PgPool) {
    let mut setup = setup(pool, Backend::Filesystem, &[]).await;
    setup.clamd.stop().await;
    let id = setup.upload_ok("later.png", fixtures::small_png(11)).await;
    let worker = setup.app.start_worker();
    let redis = setup.app.state.redis.clone();
    let block = eventually(
        Duration::from_secs(30),
        "the scans queue waits for clamd",
        || async {
            shared::queue::blocked::of(&redis, shared::queue::QueueName::Scans)
                .await
                .ok()?
                .into_iter()
                .next()
        },
    )
    .await;
    assert_eq!(block.dependency, "clamd");
    let pool = setup.app.state.pool.clone();
    let spent = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM jobs WHERE queue = 'scans' AND (attempt > 0 OR status <> 'retrying')",
        )
        .fetch_one(&pool)
        .await
        .expect("count")
    };
    eventually(
        Duration::from_secs(30),
        "the scan waits, its attempt given back",
        || async { (spent().await == 0).then_some(()) },
    )
    .await;
    harness::holds_for(
        Duration::from_secs(2),
        Duration::from_millis(100),
        "an attempt was spent while clamd was down",
        || async { spent().await == 0 },
    )
    .await;
    assert_eq!(setup.show(id).await["status"], "pending_scan");
    problem(setup.content(id).await, 409, "scan_pending").await;

    setup.clamd.start().await;
    eventually(Duration::from_secs(30), "the upload is clean", || async {
        let upload = setup.show(id).await;
        (upload["status"] == "clean").then_some(())
    })
    .await;
    worker.stop().await;
    assert_eq!(setup.content(id).await.status(), 200);
    let attempt: i32 = sqlx::query_scalar("SELECT attempt FROM jobs WHERE queue = 'scans'")
        .fetch_one(&pool)
        .await
        .expect("the scan");
    assert_eq!(attempt, 1, "the outage cost no attempt");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_rescan_and_a_rescan_of_everything_complete(pool: PgPool) {
    let setup = setup(pool, Backend::Filesystem, &[("SCANS_CONCURRENCY", "8")]).await;
    let root = setup.root.clone().expect("root");
    let id = setup.upload_ok("one.png", fixtures::small_png(1)).await;
    setup.app.run_pending_jobs().await;
    let response = setup
        .app
        .post_json_authed("/api/v1/scans", &json!({"upload_id": id}), &setup.token)
        .await;
    assert_eq!(response.status(), 202);
    setup.app.run_pending_jobs().await;
    assert_eq!(setup.show(id).await["scans"], 2);

    // 1,000 stored uploads (made directly, like a restored backup), then rescan-all.
    let owner: Uuid = sqlx::query_scalar("SELECT owner_id FROM uploads WHERE id = $1")
        .bind(id)
        .fetch_one(&setup.app.state.pool)
        .await
        .expect("owner");
    let text = b"plain text, nothing to see".to_vec();
    std::fs::create_dir_all(root.join("stored")).expect("dir");
    let mut ids = Vec::new();
    for i in 0..999u32 {
        let upload = Uuid::now_v7();
        std::fs::write(root.join("stored").join(upload.to_string()), &text).expect("object");
        sqlx::query(
            "INSERT INTO uploads (id, owner_id, file_name, size_bytes, sha256, file_type, status, location) \
             VALUES ($1, $2, $3, $4, $5, 'text', 'clean', 'stored')",
        )
        .bind(upload)
        .bind(owner)
        .bind(format!("{i}.txt"))
        .bind(i64::try_from(text.len()).expect("small"))
        .bind(shared::crypto::sha256(&i.to_be_bytes()).to_vec())
        .execute(&setup.app.state.pool)
        .await
        .expect("insert");
        ids.push(upload);
    }
    let user_response = setup
        .app
        .post_json_authed("/api/v1/admin/scans/rescan-all", &json!({}), &setup.token)
        .await;
    problem(user_response, 403, "forbidden").await;
    let admin = setup.app.admin_with_2fa().await;
    let response = setup
        .app
        .post_json_authed("/api/v1/admin/scans/rescan-all", &json!({}), &admin)
        .await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.expect("json");
    assert_eq!(accepted["total"], 1000);
    setup.app.run_pending_jobs().await;
    let request: Value = setup
        .app
        .get_authed(accepted["location"].as_str().expect("location"), &admin)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(request["status"], "succeeded", "{request}");
    assert_eq!(request["succeeded"], 1000);
    let unscanned: i64 = sqlx::query_scalar("SELECT count(*) FROM uploads WHERE scans = 0")
        .fetch_one(&setup.app.state.pool)
        .await
        .expect("count");
    assert_eq!(unscanned, 0);
}

/// The real binaries on a storage directory and a clamd of the test's own.
async fn system(pool: &PgPool, clamd: &ClamdServer, root: &Path) -> System {
    let clamd_addr = clamd.address();
    let root = root.display().to_string();
    let overrides = [
        ("CLAMD_ADDR", clamd_addr.as_str()),
        ("CLAMD_TIMEOUT_SECS", "60"),
        ("STORAGE_URL", root.as_str()),
        ("UPLOADS_RETRY_BASE_MS", "100"),
        ("SCANS_RETRY_BASE_MS", "100"),
    ];
    let mut system = System::new(pool, closed_port(), &overrides).await;
    system.start_api().await;
    system
}

/// Peak resident memory of a process so far (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .expect("VmHWM")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_26_mib_body_is_413_without_the_api_holding_it(pool: PgPool) {
    let clamd = ClamdServer::spawn().await;
    let root = scratch_dir("storage");
    let system = system(&pool, &clamd, &root).await;
    let pid = system.api.as_ref().expect("api").pid();
    let send = |bytes: Option<Vec<u8>>, streamed: bool| {
        let client = system.client.clone();
        let url = format!("{}/api/v1/uploads", system.base);
        let token = system.token.clone();
        async move {
            let mut body = fixtures::small_png(1);
            body.resize(26 * 1024 * 1024, 0x41);
            let bytes = bytes.unwrap_or(body);
            let part = if streamed {
                // Chunked, no length: the api learns the size only by reading.
                let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                    bytes.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
                reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(futures::stream::iter(
                    chunks,
                )))
            } else {
                reqwest::multipart::Part::bytes(bytes)
            };
            let form = reqwest::multipart::Form::new().part(
                "file",
                part.file_name("big.png")
                    .mime_str("image/png")
                    .expect("mime"),
            );
            client
                .post(url)
                .bearer_auth(token)
                .multipart(form)
                .send()
                .await
        }
    };
    // Warm up: one small upload, so the baseline includes a served upload.
    let small = send(Some(fixtures::small_png(2)), true)
        .await
        .expect("sent");
    assert_eq!(small.status(), 202);
    let before = peak_rss_kib(pid);
    for streamed in [true, false] {
        let response = send(None, streamed).await.expect("an answer, not a reset");
        problem(response, 413, "payload_too_large").await;
    }
    let after = peak_rss_kib(pid);
    let grown_mib = after.saturating_sub(before) as f64 / 1024.0;
    println!("api peak RSS {before} KiB → {after} KiB (+{grown_mib:.1} MiB) for two 26 MiB bodies");
    assert!(
        grown_mib < 16.0,
        "the api's peak memory grew by {grown_mib:.1} MiB: the body was held"
    );
    let staged: Vec<_> = std::fs::read_dir(root.join("staging"))
        .map(|d| d.filter_map(Result::ok).collect())
        .unwrap_or_default();
    assert_eq!(
        staged.len(),
        1,
        "only the small upload is staged: {staged:?}"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_worker_killed_mid_scan_leaves_the_scan_to_another(pool: PgPool) {
    let clamd = ClamdServer::spawn().await;
    let root = scratch_dir("storage");
    let mut system = system(&pool, &clamd, &root).await;
    system.start_worker().await;
    // clamd frozen: the scan waits on its verdict.
    clamd.pause().await;
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(fixtures::small_png(5)).file_name("slow.png"),
    );
    let response = system
        .client
        .post(format!("{}/api/v1/uploads", system.base))
        .bearer_auth(&system.token)
        .multipart(form)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    let id: Uuid = response.json::<Value>().await.expect("json")["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");
    eventually(Duration::from_secs(30), "the scan is running", || {
        let pool = pool.clone();
        async move {
            let status: Option<String> = sqlx::query_scalar(
                "SELECT status FROM jobs WHERE queue = 'scans' AND payload->>'upload_id' = $1",
            )
            .bind(id.to_string())
            .fetch_optional(&pool)
            .await
            .ok()?;
            (status.as_deref() == Some("running")).then_some(())
        }
    })
    .await;
    system.workers[0].signal("-KILL").await;
    clamd.resume().await;
    system.start_worker().await;
    let upload = eventually(Duration::from_secs(30), "the upload is clean", || {
        let system = &system;
        async move {
            let upload: Value = system
                .client
                .get(format!("{}/api/v1/uploads/{id}", system.base))
                .bearer_auth(&system.token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (upload["status"] == "clean").then_some(upload)
        }
    })
    .await;
    assert_eq!(upload["scans"], 1, "{upload}");
    let attempt: i32 = sqlx::query_scalar(
        "SELECT attempt FROM jobs WHERE queue = 'scans' AND payload->>'upload_id' = $1",
    )
    .bind(id.to_string())
    .fetch_one(&pool)
    .await
    .expect("job");
    assert_eq!(attempt, 2, "taken over after the first worker died");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_slow_upload_has_its_own_deadline(pool: PgPool) {
    let setup = setup(
        pool,
        Backend::Filesystem,
        &[("REQUEST_TIMEOUT_SECS", "1"), ("UPLOAD_TIMEOUT_SECS", "3")],
    )
    .await;
    // The body arrives over 1.5 s: past REQUEST_TIMEOUT_SECS, within UPLOAD_TIMEOUT_SECS.
    let slow = |png: Vec<u8>, pause: Duration| {
        let (head, tail) = png.split_at(png.len() / 2);
        let (head, tail) = (head.to_vec(), tail.to_vec());
        let chunks =
            futures::stream::iter([head, tail])
                .enumerate()
                .then(move |(i, chunk)| async move {
                    if i == 1 {
                        tokio::time::sleep(pause).await;
                    }
                    Ok::<_, std::io::Error>(chunk)
                });
        let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(chunks))
            .file_name("slow.png");
        reqwest::multipart::Form::new().part("file", part)
    };
    let send = |form| setup.post_upload(form);
    let response = send(slow(fixtures::small_png(1), Duration::from_millis(1500)))
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    let response = send(slow(fixtures::small_png(2), Duration::from_secs(4)))
        .await
        .expect("sent");
    problem(response, 408, "request_timeout").await;
    assert_eq!(
        setup.objects("staging").len(),
        1,
        "the cut-off upload left nothing"
    );
}

/// One account's uploads in flight are capped (`UPLOAD_MAX_IN_FLIGHT`): past it, 429
/// with `Retry-After` before the body is read; the slot is free again once the upload
/// holding it has ended.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn uploads_in_flight_are_capped_per_account(pool: PgPool) {
    let setup = setup(pool, Backend::Filesystem, &[("UPLOAD_MAX_IN_FLIGHT", "1")]).await;
    // A body whose second half is sent only when the test says so.
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let png = fixtures::small_png(7);
    let (head, tail) = png.split_at(png.len() / 2);
    let (head, tail) = (head.to_vec(), tail.to_vec());
    let held = futures::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(
        futures::stream::once(async move {
            let _ = wait.await;
            Ok::<_, std::io::Error>(tail)
        }),
    );
    let form = |body: reqwest::Body| {
        reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::stream(body).file_name("upload.png"),
        )
    };
    let send = |form| setup.post_upload(form);
    let first = tokio::spawn(send(form(reqwest::Body::wrap_stream(held))));
    let redis = setup.app.state.redis.clone();
    let pattern = redis.key("uploads-in-flight:*");
    eventually(
        Duration::from_secs(10),
        "the first upload holds its slot",
        || {
            let (redis, pattern) = (redis.clone(), pattern.clone());
            async move {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(&pattern)
                    .query_async(&mut redis.connection())
                    .await
                    .expect("keys");
                (!keys.is_empty()).then_some(())
            }
        },
    )
    .await;

    let refused = send(form(fixtures::small_png(8).into()))
        .await
        .expect("sent");
    assert_eq!(refused.headers()["retry-after"], "5");
    let body = problem(refused, 429, "rate_limited").await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("1 uploads in flight")),
        "{body}"
    );

    let _ = go.send(());
    let first = first.await.expect("joined").expect("sent");
    assert_eq!(first.status(), 202);
    // Its slot is given back as its request ends.
    let again = eventually(Duration::from_secs(10), "a slot is free again", || async {
        let response = send(form(fixtures::small_png(9).into()))
            .await
            .expect("sent");
        (response.status() == 202).then_some(response)
    })
    .await;
    assert_eq!(again.status(), 202);
}

/// The storage unreachable (S3 through a proxy this test cuts) costs no attempts: the
/// uploads queue waits for it (blocked on `storage`), and once it answers the upload
/// is stored and scanned clean, each job on its first counted attempt.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn with_the_storage_unreachable_uploads_wait_without_spending_attempts(pool: PgPool) {
    let s3 = MotoS3::start().await;
    let target = s3.endpoint().trim_start_matches("http://").to_owned();
    let mut proxy = harness::proxy::TcpProxy::start(&target).await;
    let endpoint = format!("http://127.0.0.1:{}", proxy.port());
    let setup = setup(
        pool,
        Backend::Filesystem,
        &[
            ("STORAGE_URL", s3.url().as_str()),
            ("S3_ENDPOINT", endpoint.as_str()),
            ("S3_ALLOW_HTTP", "true"),
            ("S3_ACCESS_KEY_ID", "moto-test-key"),
            ("S3_SECRET_ACCESS_KEY", "moto-test-secret"),
        ],
    )
    .await;
    let id = setup.upload_ok("held.png", fixtures::small_png(21)).await;
    proxy.cut().await;
    let worker = setup.app.start_worker();
    let redis = setup.app.state.redis.clone();
    let block = eventually(
        Duration::from_secs(60),
        "the uploads queue waits for storage",
        || async {
            shared::queue::blocked::of(&redis, shared::queue::QueueName::Uploads)
                .await
                .ok()?
                .into_iter()
                .next()
        },
    )
    .await;
    assert_eq!(block.dependency, "storage");
    let pool = setup.app.state.pool.clone();
    let spent = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM jobs WHERE queue = 'uploads' AND (attempt > 0 OR status <> 'retrying')",
        )
        .fetch_one(&pool)
        .await
        .expect("count")
    };
    eventually(
        Duration::from_secs(60),
        "the upload job waits, its attempt given back",
        || async { (spent().await == 0).then_some(()) },
    )
    .await;
    assert_eq!(setup.show(id).await["status"], "pending_scan");

    proxy.restore().await;
    eventually(Duration::from_secs(60), "the upload is clean", || async {
        let upload = setup.show(id).await;
        (upload["status"] == "clean").then_some(())
    })
    .await;
    worker.stop().await;
    let attempts: Vec<(String, i32)> = sqlx::query_as(
        "SELECT queue, attempt FROM jobs WHERE queue IN ('uploads', 'scans') ORDER BY queue DESC",
    )
    .fetch_all(&pool)
    .await
    .expect("jobs");
    assert_eq!(
        attempts,
        vec![("uploads".to_owned(), 1), ("scans".to_owned(), 1)],
        "the outage cost no attempt"
    );
}
