//! The HTTP client of webhook deliveries, guarded against server-side request
//! forgery: every address a host name resolves to is checked (all must be allowed),
//! a literal IP in the URL is checked before the request, and a redirect is followed
//! only as a `307`/`308` (which keep the method and body), at most
//! [`MAX_REDIRECTS`] times, each target checked again. No proxy from the
//! environment is used: it would resolve names where the checks cannot see.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect::{Attempt, Policy};
use shared::webhooks::{Cidr, refusal};

/// Redirects followed at most, each checked as the first URL was.
pub const MAX_REDIRECTS: usize = 3;

/// A destination deliveries may not reach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("`{host}` resolves to {ip}, a {reason} address")]
    Resolved {
        host: String,
        ip: IpAddr,
        reason: &'static str,
    },
    #[error("{ip} is a {reason} address")]
    Literal { ip: IpAddr, reason: &'static str },
    #[error("a redirect to `{0}`, which is not http(s)")]
    Scheme(String),
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
}

/// Why a URL's literal IP host may not be reached, if it has one that may not.
pub fn literal_refusal(url: &url::Url, allowed: &[Cidr]) -> Option<Refused> {
    let ip = match url.host()? {
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
        url::Host::Domain(_) => return None,
    };
    refusal(ip, allowed).map(|reason| Refused::Literal { ip, reason })
}

/// Resolves with the system resolver (on tokio's blocking pool), then refuses the
/// name if any of its addresses may not be reached: connecting to the first allowed
/// one would let a name with a private record slip through.
#[derive(Debug, Clone)]
struct GuardedResolver {
    allowed: Arc<Vec<Cidr>>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let allowed = self.allowed.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for addr in &addrs {
                if let Some(reason) = refusal(addr.ip(), &allowed) {
                    return Err(Box::new(Refused::Resolved {
                        host: host.clone(),
                        ip: addr.ip(),
                        reason,
                    })
                        as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

fn redirect_policy(allowed: Arc<Vec<Cidr>>) -> Policy {
    Policy::custom(move |attempt: Attempt<'_>| {
        // 301/302/303 would turn the POST into a body-less GET: the event would not
        // arrive. The 3xx is the answer (not a 2xx: the delivery is retried).
        if !matches!(attempt.status().as_u16(), 307 | 308) {
            return attempt.stop();
        }
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(Refused::TooManyRedirects);
        }
        let url = attempt.url();
        if !matches!(url.scheme(), "http" | "https") {
            let scheme = url.scheme().to_owned();
            return attempt.error(Refused::Scheme(scheme));
        }
        match literal_refusal(url, &allowed) {
            Some(refused) => attempt.error(refused),
            None => attempt.follow(),
        }
    })
}

/// The delivery client: guarded resolver and redirects, no proxy, `timeout` per
/// attempt (connect, send, answer).
pub fn build(allowed: &[Cidr], timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    let allowed = Arc::new(allowed.to_vec());
    reqwest::Client::builder()
        .dns_resolver(GuardedResolver {
            allowed: allowed.clone(),
        })
        .redirect(redirect_policy(allowed))
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("Conveyor-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The refusal behind a failed request, if that is why it failed.
pub fn refused_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(refused) = err.downcast_ref::<Refused>() {
            return Some(refused);
        }
        current = err.source();
    }
    None
}

/// An error with its causes, `a: b: c` (reqwest's own text names no cause).
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(cause) = current {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        current = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_ips_are_checked_and_names_are_left_to_the_resolver() {
        let allowed: Vec<Cidr> = vec!["127.0.0.1/32".parse().expect("cidr")];
        let url = |s: &str| url::Url::parse(s).expect("url");
        assert!(literal_refusal(&url("http://127.0.0.1:9/"), &allowed).is_none());
        assert!(literal_refusal(&url("http://127.0.0.1:9/"), &[]).is_some());
        assert!(literal_refusal(&url("http://[::ffff:a9fe:a9fe]/"), &allowed).is_some());
        assert!(literal_refusal(&url("http://localhost/"), &[]).is_none());
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_with_any_refused_address() {
        let resolver = GuardedResolver {
            allowed: Arc::new(Vec::new()),
        };
        let name: Name = "localhost".parse().expect("name");
        let err = match resolver.resolve(name).await {
            Ok(_) => panic!("localhost resolved"),
            Err(err) => err,
        };
        assert!(
            matches!(
                refused_in(&*err),
                Some(Refused::Resolved {
                    reason: "loopback",
                    ..
                })
            ),
            "{err}"
        );
        let allowed = GuardedResolver {
            allowed: Arc::new(vec![
                "127.0.0.0/8".parse().expect("cidr"),
                "::1/128".parse().expect("cidr"),
            ]),
        };
        let name: Name = "localhost".parse().expect("name");
        assert!(
            allowed.resolve(name).await.is_ok(),
            "allowed loopback resolves"
        );
    }
}
