//! Liveness, readiness and `/metrics`: the operational routes both binaries serve.
//! Readiness asks PostgreSQL and Redis concurrently, each with a short timeout.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use sqlx::PgPool;

use crate::error_code::ErrorCode;
use crate::problem::Problem;
use crate::redis::Redis;
use crate::telemetry::metric;

/// What readiness needs to ask.
#[derive(Clone, Debug)]
pub struct Health {
    pub pool: PgPool,
    pub redis: Redis,
    pub timeout: Duration,
    /// `api` or `worker`: the label on `conveyor_dependency_up`.
    pub service: &'static str,
    /// Set when a part of the process itself failed (a worker's consumer died).
    pub flag: HealthFlag,
}

/// A process-internal failure that readiness reports.
#[derive(Clone, Debug, Default)]
pub struct HealthFlag(std::sync::Arc<std::sync::Mutex<Option<String>>>);

impl HealthFlag {
    pub fn fail(&self, reason: String) {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert(reason);
        }
    }

    pub fn failure(&self) -> Option<String> {
        self.0.lock().ok().and_then(|slot| slot.clone())
    }
}

/// The answer of one readiness round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` when every dependency answered.
    pub status: &'static str,
    pub postgres: DependencyState,
    pub redis: DependencyState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DependencyState {
    Up,
    Down,
}

impl Health {
    /// Asks both dependencies at once; each gets `timeout`.
    pub async fn check(&self) -> Readiness {
        let postgres = async {
            let query = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&self.pool);
            matches!(tokio::time::timeout(self.timeout, query).await, Ok(Ok(1)))
        };
        let redis = async {
            matches!(
                tokio::time::timeout(self.timeout, self.redis.ping()).await,
                Ok(Ok(()))
            )
        };
        let (postgres, redis) = tokio::join!(postgres, redis);
        for (name, up) in [("postgres", postgres), ("redis", redis)] {
            metrics::gauge!(metric::DEPENDENCY_UP, "service" => self.service, "dependency" => name)
                .set(if up { 1.0 } else { 0.0 });
        }
        let state = |up| {
            if up {
                DependencyState::Up
            } else {
                DependencyState::Down
            }
        };
        Readiness {
            status: if postgres && redis {
                "ready"
            } else {
                "unavailable"
            },
            postgres: state(postgres),
            redis: state(redis),
        }
    }
}

impl Health {
    /// Re-checks every `every` so `conveyor_dependency_up` stays current between
    /// probes; runs until the returned handle is aborted or the runtime stops.
    pub fn spawn_watch(self, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let readiness = self.check().await;
                if readiness.status != "ready" {
                    tracing::warn!(postgres = ?readiness.postgres, redis = ?readiness.redis, "a dependency is down");
                }
            }
        })
    }
}

/// `GET /health/live` and `GET /health/ready`.
pub fn routes(health: Health) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(health)
}

/// `GET /metrics` in the Prometheus text format.
pub fn metrics_routes(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move { render(&handle) }
        }),
    )
}

/// [`metrics_routes`] for a worker: the sampled gauges are set from the latest stored
/// sample just before each render.
pub fn sampled_metrics_routes(
    handle: PrometheusHandle,
    exporter: crate::maintenance::sample::Exporter,
) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let (handle, exporter) = (handle.clone(), exporter.clone());
            async move {
                exporter.refresh().await;
                render(&handle)
            }
        }),
    )
}

fn render(handle: &PrometheusHandle) -> Response {
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The body of a live answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Live {
    pub status: &'static str,
}

/// The process is up and serving.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, body = Live)))]
pub async fn live() -> Json<Live> {
    Json(Live { status: "live" })
}

/// PostgreSQL and Redis both answered within HEALTH_TIMEOUT_MS.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    responses(
        (status = 200, body = Readiness, description = "Every dependency answered"),
        (status = 503, body = Problem, content_type = "application/problem+json",
         description = "`dependency_unavailable`; the detail names the dependency that did not answer"),
    )
)]
pub async fn ready(State(health): State<Health>) -> Response {
    if let Some(reason) = health.flag.failure() {
        return Problem::new(ErrorCode::DependencyUnavailable, reason).into_response();
    }
    let readiness = health.check().await;
    let down: Vec<&str> = [("postgres", readiness.postgres), ("redis", readiness.redis)]
        .into_iter()
        .filter(|(_, state)| *state == DependencyState::Down)
        .map(|(name, _)| name)
        .collect();
    if down.is_empty() {
        return Json(readiness).into_response();
    }
    let millis = health.timeout.as_millis();
    let detail = format!("{} did not answer within {millis} ms", down.join(" and "));
    tracing::warn!(dependencies = ?down, "not ready");
    Problem::new(ErrorCode::DependencyUnavailable, detail).into_response()
}
