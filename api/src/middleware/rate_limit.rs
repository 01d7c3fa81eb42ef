//! The general rate limiter: every request under `/api/v1` (and the spec and docs)
//! spends from a budget per route group (`RATE_LIMIT_AUTH`, `_SUBMIT`, `_READ`) and
//! per caller — the user of a valid access token, else the client address
//! (`X-Forwarded-For` only with `TRUST_FORWARDED_FOR`). The algorithm is GCRA (the
//! generic cell rate algorithm: exact bursts, no window edges) run as one Lua script
//! in Redis on Redis's clock, so the limit holds across api replicas in one round trip.
//! Over budget: 429 `rate_limited` with `Retry-After`. Every answer carries the IETF
//! `RateLimit-Policy` and `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers).
//!
//! Redis unreachable: the limiter lets requests through (fail open, logged and
//! counted in `conveyor_rate_limit_skipped_total`). Reads and submissions must stay
//! possible in an outage (a submission is still recorded in PostgreSQL); for sign-in
//! the per-account login throttle has the same rule, and what an auth flood can cost
//! is bounded by the password-hashing limit, not by Redis.

use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shared::config::Rate;
use shared::session_epoch;
use shared::telemetry::metric;

use crate::error::ApiError;
use crate::extract::ClientIp;
use crate::middleware::auth::VerifiedAccess;
use crate::services::session_cache::SessionEpoch;
use crate::state::AppState;

/// Route groups, each with its own budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Auth,
    Submit,
    Read,
}

impl Group {
    pub fn name(self) -> &'static str {
        match self {
            Group::Auth => "auth",
            Group::Submit => "submit",
            Group::Read => "read",
        }
    }

    /// The group of a request; `None` for what is never limited (health probes).
    pub fn of(method: &Method, path: &str) -> Option<Group> {
        if path.starts_with("/health/") {
            return None;
        }
        if path.starts_with("/api/v1/auth/") {
            return Some(Group::Auth);
        }
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            Some(Group::Read)
        } else {
            Some(Group::Submit)
        }
    }

    fn rate(self, state: &AppState) -> Rate {
        let limits = &state.config.rate_limits;
        match self {
            Group::Auth => limits.auth,
            Group::Submit => limits.submit,
            Group::Read => limits.read,
        }
    }
}

/// GCRA on Redis's clock. KEYS[1]: the caller's key; ARGV: emission interval and
/// burst tolerance, in microseconds. Returns {allowed (0/1), remaining, wait µs,
/// epoch}. For a signed-in caller KEYS[2] is the user's session epoch (same hash
/// slot), returned when allowed — set to ARGV[3] for ARGV[4] seconds if missing —
/// so the session check can use its cache without another round trip; else ''.
const GCRA: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then
  return {0, 0, allow_at - now, ''}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
local remaining = math.floor((tolerance + interval - (new_tat - now)) / interval)
local epoch = ''
if KEYS[2] then
  epoch = redis.call('GET', KEYS[2])
  if not epoch then
    redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
    epoch = ARGV[3]
  end
end
return {1, remaining, 0, epoch}
";

/// What the limiter decided for one request.
#[derive(Debug, Clone, Copy)]
struct Decision {
    allowed: bool,
    remaining: u64,
    wait: Duration,
    /// The signed-in caller's session epoch.
    epoch: Option<SessionEpoch>,
}

#[tracing::instrument(name = "redis", target = "conveyor_trace", skip_all, fields(otel.name = "redis rate limit", otel.kind = "client", db.system.name = "redis", db.operation.name = "EVALSHA"))]
async fn decide(
    state: &AppState,
    key: &str,
    epoch_key: Option<&str>,
    rate: Rate,
) -> Result<Decision, redis::RedisError> {
    let interval = (rate.per.as_micros() / u128::from(rate.requests)).max(1);
    let tolerance = interval * u128::from(rate.requests.saturating_sub(1));
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    let script = SCRIPT.get_or_init(|| redis::Script::new(GCRA));
    let mut conn = state.redis.connection();
    let mut invocation = script.key(key);
    if let Some(epoch_key) = epoch_key {
        invocation.key(epoch_key);
    }
    let (allowed, remaining, wait, epoch): (i64, i64, i64, Option<String>) = invocation
        .arg(u64::try_from(interval).unwrap_or(u64::MAX))
        .arg(u64::try_from(tolerance).unwrap_or(u64::MAX))
        .arg(session_epoch::fresh())
        .arg(session_epoch::TTL.as_secs())
        .invoke_async(&mut conn)
        .await?;
    Ok(Decision {
        allowed: allowed == 1,
        remaining: u64::try_from(remaining).unwrap_or(0),
        wait: Duration::from_micros(u64::try_from(wait).unwrap_or(0)),
        epoch: epoch.and_then(|epoch| epoch.parse().ok()).map(SessionEpoch),
    })
}

/// Who spends: the user of a valid access token, else the client address. The
/// verified claims are left in the request's extensions, so the auth extractor does
/// not verify the same signature again.
fn caller(state: &AppState, parts: &mut Parts, ip: Option<ClientIp>) -> Caller {
    let claims = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| state.security.tokens.verify_access(token.trim()).ok());
    let user = claims.as_ref().map(|claims| claims.sub);
    if let Some(claims) = claims {
        parts.extensions.insert(VerifiedAccess(claims));
    }
    match (user, ip) {
        (Some(user), _) => Caller::User(user),
        (None, Some(ClientIp(ip))) => Caller::Address(ip.to_string()),
        (None, None) => Caller::Address("unknown".to_owned()),
    }
}

enum Caller {
    User(uuid::Uuid),
    Address(String),
}

fn headers(response: &mut Response, group: Group, rate: Rate, decision: &Decision) {
    let window = rate.per.as_secs();
    let reset = decision.wait.as_secs() + u64::from(decision.wait.subsec_nanos() > 0);
    let values = [
        (
            "ratelimit-policy",
            format!("\"{}\";q={};w={window}", group.name(), rate.requests),
        ),
        (
            "ratelimit",
            format!("\"{}\";r={};t={reset}", group.name(), decision.remaining),
        ),
    ];
    for (name, value) in values {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
}

pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(group) = Group::of(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    let ip = ClientIp::from_request_parts(&mut parts, &state).await.ok();
    let who = caller(&state, &mut parts, ip);
    let mut request = Request::from_parts(parts, body);
    let rate = group.rate(&state);
    // A user's limit key shares the hash slot of the user's session epoch.
    let (key, epoch_key) = match who {
        Caller::User(user) => (
            format!(
                "ratelimit:{}:{}",
                group.name(),
                session_epoch::user_tag(user)
            ),
            Some(session_epoch::key(&state.redis, user)),
        ),
        Caller::Address(ip) => (format!("ratelimit:{}:ip:{ip}", group.name()), None),
    };
    let key = state.redis.key(&key);
    let decision = match decide(&state, &key, epoch_key.as_deref(), rate).await {
        Ok(decision) => decision,
        Err(err) => {
            metrics::counter!(metric::RATE_LIMIT_SKIPPED_TOTAL, "group" => group.name())
                .increment(1);
            tracing::warn!(error = %err, group = group.name(), "rate limit skipped: Redis unavailable");
            return next.run(request).await;
        }
    };
    if !decision.allowed {
        metrics::counter!(metric::RATE_LIMITED_TOTAL, "group" => group.name()).increment(1);
        let mut response =
            ApiError::RateLimited(decision.wait.max(Duration::from_secs(1))).into_response();
        headers(&mut response, group, rate, &decision);
        return response;
    }
    if let Some(epoch) = decision.epoch {
        request.extensions_mut().insert(epoch);
    }
    let mut response = next.run(request).await;
    headers(&mut response, group, rate, &decision);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_fall_into_their_groups() {
        assert_eq!(
            Group::of(&Method::POST, "/api/v1/auth/login"),
            Some(Group::Auth)
        );
        assert_eq!(
            Group::of(&Method::GET, "/api/v1/auth/2fa/setup"),
            Some(Group::Auth)
        );
        assert_eq!(
            Group::of(&Method::POST, "/api/v1/emails"),
            Some(Group::Submit)
        );
        assert_eq!(
            Group::of(&Method::PATCH, "/api/v1/admin/users/x"),
            Some(Group::Submit)
        );
        assert_eq!(
            Group::of(&Method::GET, "/api/v1/requests"),
            Some(Group::Read)
        );
        assert_eq!(Group::of(&Method::GET, "/docs/"), Some(Group::Read));
        assert_eq!(Group::of(&Method::GET, "/health/ready"), None);
    }
}
