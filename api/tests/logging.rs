//! A 5xx is logged once, at error level, where it is turned into a response. Alone in
//! its test binary: it installs the process-wide `tracing` subscriber.

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use api::error::ApiError;
use axum::Router;
use axum::routing::get;
use common::{spawn_app_with, test_config};
use sqlx::PgPool;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Records the target of every error-level event; spans are counted, nothing more.
#[derive(Default)]
struct ErrorEvents {
    next_span: AtomicU64,
    targets: Mutex<Vec<String>>,
}

impl Subscriber for &'static ErrorEvents {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        if *event.metadata().level() == Level::ERROR
            && let Ok(mut targets) = self.targets.lock()
        {
            targets.push(event.metadata().target().to_owned());
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

async fn fail() -> Result<&'static str, ApiError> {
    Err(ApiError::Internal(anyhow::anyhow!("the disk is on fire")))
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_5xx_is_logged_once(pool: PgPool) {
    let events: &'static ErrorEvents = Box::leak(Box::default());
    tracing::subscriber::set_global_default(events).expect("the only subscriber");
    let routes = Router::new().route("/test/fail", get(fail));
    let app = spawn_app_with(pool, test_config(&[]), Some(routes)).await;
    let response = app.get("/api/v1/test/fail").await;
    assert_eq!(response.status(), 500);
    // Every layer logs before the response leaves, so all events are in by now.
    let targets = events.targets.lock().expect("lock").clone();
    assert_eq!(targets, vec!["api::error".to_owned()], "{targets:?}");
}
