//! Outbound HTTP (webhook deliveries, later AI providers): one client that follows no redirect,
//! sends through no proxy, and refuses private, loopback and link-local targets after DNS
//! resolution, unless the server allows them (`PLINTH_OUTBOUND_ALLOW_PRIVATE=true`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::webhooks::is_private;

/// Resolves names with the system resolver and keeps only public addresses.
#[derive(Debug)]
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found.iter().copied().filter(|a| !is_private(a.ip())).collect();
            if public.is_empty() && !found.is_empty() {
                return Err(format!("{host} resolves to a private address, which outbound calls may not reach").into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// The client for calls to URLs that tenants give.
pub fn client(allow_private: bool, timeout: Duration) -> reqwest::Client {
    builder(allow_private, Some(timeout))
}

/// A client for AI providers: no overall timeout (answers stream for minutes), the SSRF guard
/// unless `trusted` (URLs from the server's own configuration).
/// Calls to services the operator configured (an SMS provider): their URLs are trusted.
pub fn service_client() -> reqwest::Client {
    builder(true, Some(Duration::from_secs(20)))
}

pub fn ai_client(allow_private: bool, trusted: bool) -> reqwest::Client {
    builder(allow_private || trusted, None)
}

fn builder(allow_private: bool, timeout: Option<Duration>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(timeout.unwrap_or(Duration::from_secs(10)).min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("Plinth/", env!("CARGO_PKG_VERSION")));
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    builder.build().expect("the outbound client's settings are valid")
}

/// Refuses a URL whose host is a private address written out (names are checked by the
/// resolver, which sees no literal address).
pub fn check_target(url: &reqwest::Url, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    const PRIVATE: &str = "the host is a private address, which outbound calls may not reach";
    let literal: Option<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(v4)) => Some(v4.into()),
        Some(url::Host::Ipv6(v6)) => Some(v6.into()),
        Some(url::Host::Domain(name)) if name == "localhost" || name.ends_with(".localhost") => {
            return Err(PRIVATE.into())
        }
        _ => None,
    };
    if literal.is_some_and(is_private) {
        return Err(PRIVATE.into());
    }
    if url.scheme() != "https" {
        return Err("only https:// URLs are called".into());
    }
    Ok(())
}

/// Refuses a host (a name or a literal address) that is, or resolves to, a private address, for
/// connections made by other means than the guarded client (a tenant's SMTP server).
pub async fn check_host(host: &str, port: u16, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    const PRIVATE: &str = "the host is, or resolves to, a private address, which outbound calls may not reach";
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host == "localhost" || host.ends_with(".localhost") {
        return Err(PRIVATE.into());
    }
    let found: Vec<SocketAddr> =
        tokio::net::lookup_host((host, port)).await.map_err(|e| format!("the host cannot be resolved: {e}"))?.collect();
    if found.is_empty() || found.iter().any(|a| is_private(a.ip())) {
        return Err(PRIVATE.into());
    }
    Ok(())
}

/// The host and port of an `smtp://` or `smtps://` URL.
pub fn smtp_target(url: &str) -> Option<(String, u16)> {
    let parsed = url::Url::parse(url).ok()?;
    let port = parsed.port().unwrap_or(if parsed.scheme() == "smtps" { 465 } else { 587 });
    Some((parsed.host_str()?.to_string(), port))
}

/// A short, log-safe account of why a call failed.
pub fn describe(error: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut innermost = None;
    while let Some(inner) = source {
        innermost = Some(inner.to_string());
        source = inner.source();
    }
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the response could not be read"
    } else {
        "the request failed"
    };
    match innermost {
        Some(detail) => format!("{what}: {detail}"),
        None => what.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_private_targets_are_refused() {
        for bad in
            ["https://127.0.0.1/x", "https://[::1]/x", "https://10.0.0.1/", "https://localhost/", "http://a.com/"]
        {
            assert!(check_target(&bad.parse().unwrap(), false).is_err(), "{bad}");
        }
        assert!(check_target(&"https://example.com/x".parse().unwrap(), false).is_ok());
        assert!(check_target(&"http://127.0.0.1:9/x".parse().unwrap(), true).is_ok());
    }

    #[tokio::test]
    async fn names_that_resolve_to_private_addresses_are_refused() {
        let refused = PublicOnly.resolve("localhost".parse().unwrap()).await;
        assert!(refused.is_err());
    }
}
