//! Outbound HTTP (webhook deliveries, later AI providers): one client that follows no redirect,
//! sends through no proxy, and refuses private, loopback and link-local targets after DNS
//! resolution, unless the server allows them (`PLINTH_OUTBOUND_ALLOW_PRIVATE=true`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

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
pub fn client(allow_private: bool, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    client_of(allow_private, Some(timeout))
}

/// A client for AI providers: no overall timeout (answers stream for minutes), the SSRF guard
/// unless `trusted` (URLs from the server's own configuration).
/// Calls to services the operator configured (an SMS provider): their URLs are trusted.
pub fn service_client() -> reqwest::Result<reqwest::Client> {
    client_of(true, Some(Duration::from_secs(20)))
}

pub fn ai_client(allow_private: bool, trusted: bool) -> reqwest::Result<reqwest::Client> {
    builder(allow_private || trusted, Some(AI_CALL_MAX)).read_timeout(AI_IDLE_MAX).build()
}

/// Longest an AI call may take, a stream included.
pub const AI_CALL_MAX: Duration = Duration::from_secs(15 * 60);
/// Longest an AI provider may stay silent mid-answer.
pub const AI_IDLE_MAX: Duration = Duration::from_secs(120);

fn client_of(allow_private: bool, timeout: Option<Duration>) -> reqwest::Result<reqwest::Client> {
    builder(allow_private, timeout).build()
}

fn builder(allow_private: bool, timeout: Option<Duration>) -> reqwest::ClientBuilder {
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
    builder
}

/// Reads an answer's body, at most `max` bytes: a longer one is refused, never cut and used.
pub async fn read_capped(mut response: reqwest::Response, max: usize) -> Result<Bytes, String> {
    let too_large = || format!("the answer is larger than {max} bytes");
    if response.content_length().is_some_and(|length| length > max as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|error| describe(&error))? {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

/// Reads an answer's JSON body, at most `max` bytes.
pub async fn read_json_capped(response: reqwest::Response, max: usize) -> Result<serde_json::Value, String> {
    let body = read_capped(response, max).await?;
    serde_json::from_slice(&body).map_err(|error| format!("the answer is not JSON: {error}"))
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
pub async fn check_host(host: &str, port: u16, allow_private: bool) -> Result<Option<IpAddr>, String> {
    if allow_private {
        return Ok(None);
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
    // The address checked is the one to connect to: a second lookup could answer otherwise.
    Ok(found.first().map(SocketAddr::ip))
}

/// The host and port of an `smtp://` or `smtps://` URL, with the mail client's default ports
/// (465 for `smtps`, 587 for STARTTLS, 25 for plain `smtp`).
pub fn smtp_target(url: &str) -> Option<(String, u16)> {
    let parsed = url::Url::parse(url).ok()?;
    let tls = parsed.query_pairs().any(|(k, _)| k == "tls");
    let default = match parsed.scheme() {
        "smtps" => 465,
        _ if tls => 587,
        _ => 25,
    };
    Some((parsed.host_str()?.to_string(), parsed.port().unwrap_or(default)))
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

/// Whether an address is one outbound calls must not reach by default: private, loopback,
/// link-local, shared (100.64/10), benchmarking (198.18/15), reserved (240/4) and the IETF block
/// (192.0.0/24); on IPv6 also unique-local, link- and site-local, IPv4-compatible (`::a.b.c.d`),
/// and the IPv4 address a mapped (`::ffff:`), NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`) one
/// carries; the local-use NAT64 prefix `64:ff9b:1::/48` is refused whole.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 100 && (64..128).contains(&b)
                || a == 0
                || a == 198 && (b & 0xfe) == 18
                || a >= 240
                || a == 192 && b == 0 && c == 0
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |high: u16, low: u16| {
                is_private(IpAddr::V4(std::net::Ipv4Addr::from((u32::from(high) << 16) | u32::from(low))))
            };
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                // IPv4-compatible `::a.b.c.d` (deprecated): never a public destination.
                || s[..6].iter().all(|&x| x == 0)
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0) && embedded(s[6], s[7]))
                || (s[0] == 0x2002 && embedded(s[1], s[2]))
        }
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

    #[test]
    fn addresses_that_lead_inside_are_private() {
        for inside in [
            "127.0.0.1",
            "10.0.0.1",
            "198.18.0.1",
            "198.19.255.255",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.0.8",
            "100.64.0.1",
            "::1",
            "::127.0.0.1",
            "::10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b:1::808:808",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "fec0::1",
            "fe80::1",
            "fd00::1",
        ] {
            assert!(is_private(inside.parse().unwrap()), "{inside}");
        }
        for outside in ["8.8.8.8", "198.20.0.1", "239.0.0.1", "2001:4860::8888", "64:ff9b::808:808", "2002:808:808::1"]
        {
            let ip: IpAddr = outside.parse().unwrap();
            assert_eq!(is_private(ip), ip.is_multicast(), "{outside}");
        }
    }
}
