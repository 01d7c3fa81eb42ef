//! The public listener (address, body limits, timeouts, CORS, connection caps) and the
//! public origin (`PUBLIC_URL`) links point at.

use std::net::SocketAddr;
use std::time::Duration;

use super::ConfigError;
use super::env::Env;

/// The public listener and what it accepts.
#[derive(Debug)]
pub struct HttpConfig {
    pub api_addr: SocketAddr,
    pub body_limit_bytes: usize,
    /// Body limit of `POST /campaigns` (up to 100,000 recipients).
    pub campaign_body_limit_bytes: usize,
    pub request_timeout: Duration,
    pub cors_allowed_origins: Vec<String>,
    /// Take the client address from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Event streams (`GET /requests/{id}/events`) one user may hold open per api
    /// process; past it 429.
    pub sse_max_streams_per_user: usize,
    /// A connection must deliver a complete request head this long after it opens (or
    /// after the first byte of a later request); otherwise it is closed.
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no new request for this long is closed.
    pub idle_timeout: Duration,
    /// Connections the public listener holds open at once; past it, it stops accepting
    /// until one closes. `None`: derived from the open-file limit when serving starts.
    pub max_connections: Option<usize>,
    /// The operators' console at `/console` (`CONSOLE_ENABLED`; on by default outside
    /// production, off in production unless turned on).
    pub console_enabled: bool,
    /// Where the console links a request's trace (`CONSOLE_TRACE_URL`): a URL
    /// template whose `{trace_id}` becomes the trace's 32 hex digits, e.g. Jaeger's
    /// `http://127.0.0.1:16686/trace/{trace_id}`. `None`: the trace id is shown
    /// without a link.
    pub console_trace_url: Option<String>,
}

impl HttpConfig {
    pub(crate) fn read<F: Fn(&str) -> Option<String>>(
        env: &Env<'_, F>,
        production: bool,
    ) -> Result<Self, ConfigError> {
        Ok(HttpConfig {
            console_enabled: env.bool("CONSOLE_ENABLED", !production)?,
            console_trace_url: trace_url(env)?,
            api_addr: env.parsed("API_ADDR", socket("127.0.0.1:8080"))?,
            body_limit_bytes: env.parsed_range(
                "BODY_LIMIT_BYTES",
                1024 * 1024,
                1024..=1024 * 1024 * 1024,
            )?,
            campaign_body_limit_bytes: env.parsed_range(
                "CAMPAIGN_BODY_LIMIT_BYTES",
                16 * 1024 * 1024,
                1024..=1024 * 1024 * 1024,
            )?,
            request_timeout: env.seconds("REQUEST_TIMEOUT_SECS", 30)?,
            cors_allowed_origins: env.origins("CORS_ALLOWED_ORIGINS")?,
            trust_forwarded_for: env.bool("TRUST_FORWARDED_FOR", false)?,
            sse_max_streams_per_user: env.parsed_range(
                "SSE_MAX_STREAMS_PER_USER",
                10,
                1..=10_000,
            )?,
            header_read_timeout: env.seconds_in("HTTP_HEADER_READ_TIMEOUT_SECS", 10, 1..=3600)?,
            idle_timeout: env.seconds_in("HTTP_IDLE_TIMEOUT_SECS", 60, 1..=86_400)?,
            max_connections: match env.get("HTTP_MAX_CONNECTIONS") {
                None => None,
                Some(_) => Some(env.parsed_range("HTTP_MAX_CONNECTIONS", 1, 1..=1_000_000)?),
            },
        })
    }
}

/// `CONSOLE_TRACE_URL`: an http(s) URL with `{trace_id}` in it, or unset.
fn trace_url<F: Fn(&str) -> Option<String>>(
    env: &Env<'_, F>,
) -> Result<Option<String>, ConfigError> {
    const VAR: &str = "CONSOLE_TRACE_URL";
    let Some(raw) = env.get(VAR) else {
        return Ok(None);
    };
    let template = raw.trim();
    let invalid = |reason: &str| ConfigError::Invalid {
        var: VAR,
        reason: reason.to_owned(),
    };
    if !template.contains("{trace_id}") {
        return Err(invalid(
            "must contain {trace_id}, e.g. http://127.0.0.1:16686/trace/{trace_id}",
        ));
    }
    // As it will be used: with a trace id in place of the placeholder.
    let example = template.replace("{trace_id}", "4bf92f3577b34da6a3ce929d0e0e4736");
    let url = url::Url::parse(&example).map_err(|err| invalid(&format!("not a URL ({err})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("must be an http:// or https:// URL with a host"));
    }
    Ok(Some(template.to_owned()))
}

/// A built-in default address.
pub(super) fn socket(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| unreachable!("built-in default address {s}"))
}

/// `PUBLIC_URL`: an http(s) origin (optionally with a path prefix), without a
/// trailing slash. Outside production it defaults to `http://` + `API_ADDR` (an
/// unspecified address such as 0.0.0.0 becomes 127.0.0.1).
pub(crate) fn public_url<F: Fn(&str) -> Option<String>>(
    env: &Env<'_, F>,
    production: bool,
) -> Result<String, ConfigError> {
    let Some(raw) = env.get("PUBLIC_URL") else {
        if production {
            return Err(ConfigError::MissingSecret {
                var: "PUBLIC_URL",
                hint: "the api's public https origin, for links in account emails and unsubscribe links",
            });
        }
        let mut addr = env.parsed("API_ADDR", socket("127.0.0.1:8080"))?;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        return Ok(format!("http://{addr}"));
    };
    let url = raw.trim().trim_end_matches('/');
    let host = url.split_once("://").map_or("", |(_, rest)| rest);
    let loopback = ["localhost", "127.0.0.1", "[::1]"].iter().any(|name| {
        host.strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
    });
    // Plain http only where nothing crosses a network: outside production, or loopback.
    let scheme_ok =
        url.starts_with("https://") || (url.starts_with("http://") && (!production || loopback));
    if !scheme_ok || host.is_empty() || url.contains(['?', '#', ' ', '"', '<', '>']) {
        return Err(ConfigError::Invalid {
            var: "PUBLIC_URL",
            reason: "must be an https:// origin (http:// only outside production or on \
                     localhost), e.g. https://api.example.com, without query or fragment"
                .into(),
        });
    }
    Ok(url.to_owned())
}
