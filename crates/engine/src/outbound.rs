//! Where a component's outgoing HTTP requests (`wasi:http/outgoing-handler`) may go: the
//! `allow_outbound` list of the policy. Nothing is allowed by default.
//!
//! Patterns: `*` allows everything; otherwise `SCHEME://HOST[:PORT]`, where HOST is a name,
//! an IPv4 address, `[IPv6]`, or `*.DOMAIN` (any name under DOMAIN, not DOMAIN itself), and a
//! missing PORT means the scheme's default (80, 443). A refused request fails in the guest with
//! `HTTP-request-denied` before any connection is made, and is reported once per destination
//! on the container's stderr (its log), not once per request.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::client::OutboundClient;

/// One allowed destination.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    Everything,
    Destination {
        scheme: String,
        host: HostPattern,
        port: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com` → `.example.com`.
    Under(String),
}

/// The allow-list, the record of destinations already reported, and the pooled client that
/// allowed requests go through.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    allowed: Arc<Vec<Allowed>>,
    reported: Arc<Mutex<HashSet<String>>>,
    client: OutboundClient,
}

/// A pattern that is not `*` or `SCHEME://HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("allow_outbound entry {pattern:?}: {reason}")]
pub struct OutboundPatternError {
    /// The entry as written.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// Parses one `allow_outbound` entry.
fn parse(pattern: &str) -> Result<Allowed, OutboundPatternError> {
    let fail = |reason: &str| OutboundPatternError {
        pattern: pattern.to_owned(),
        reason: reason.to_owned(),
    };
    if pattern == "*" {
        return Ok(Allowed::Everything);
    }
    let (scheme, rest) = pattern
        .split_once("://")
        .ok_or_else(|| fail("expected `*` or SCHEME://HOST[:PORT]"))?;
    let scheme = scheme.to_ascii_lowercase();
    let default = default_port(&scheme).ok_or_else(|| fail("the scheme must be http or https"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') || rest.contains('@') {
        return Err(fail("a destination has no path, query or user part"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (
            host,
            port.parse::<u16>()
                .map_err(|_| fail("the port must be a number from 0 to 65535"))?,
        ),
        _ => (rest, default),
    };
    if host.is_empty() {
        return Err(fail("the host is empty"));
    }
    let host = host.to_ascii_lowercase();
    let host = match host.strip_prefix("*.") {
        Some(domain) if !domain.is_empty() && !domain.contains('*') => {
            HostPattern::Under(format!(".{domain}"))
        }
        _ if host.contains('*') => {
            return Err(fail("`*` may only open the host, as in *.example.com"));
        }
        _ => HostPattern::Exact(host),
    };
    Ok(Allowed::Destination { scheme, host, port })
}

impl OutboundPolicy {
    /// The policy for `patterns`, checked (the policy file's parser calls [`validate`] first,
    /// so a bad entry fails the container at create).
    pub fn new(patterns: &[String]) -> OutboundPolicy {
        OutboundPolicy {
            allowed: Arc::new(patterns.iter().filter_map(|p| parse(p).ok()).collect()),
            reported: Arc::default(),
            client: OutboundClient::default(),
        }
    }

    /// Whether `scheme://host:port` may be reached.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        self.allowed.iter().any(|allowed| match allowed {
            Allowed::Everything => true,
            Allowed::Destination {
                scheme: s,
                host: h,
                port: p,
            } => {
                s == scheme
                    && *p == port
                    && match h {
                        HostPattern::Exact(exact) => *exact == host,
                        HostPattern::Under(suffix) => host.ends_with(suffix.as_str()),
                    }
            }
        })
    }
}

/// Checks every `allow_outbound` entry.
pub fn validate(patterns: &[String]) -> Result<(), OutboundPatternError> {
    patterns.iter().try_for_each(|p| parse(p).map(drop))
}

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                )>,
            > + Send,
    > {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri
            .port_u16()
            .or_else(|| default_port(&scheme))
            .unwrap_or(0);
        if !self.allows(&scheme, &host, port) {
            let destination = format!("{scheme}://{host}:{port}");
            let first = self
                .reported
                .lock()
                .map(|mut seen| seen.insert(destination.clone()))
                .unwrap_or(false);
            if first {
                crate::stderr_line(&format!(
                    "wasmcell: outgoing HTTP request to {destination} denied: not in the \
                     policy's allow_outbound (reported once per destination)"
                ));
            }
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let _ = fut;
        let client = self.client.clone();
        Box::new(async move {
            let response = client.send(request, options).await?;
            // The connection is driven by a task of its own (it outlives this request in the
            // pool), so there is no per-request I/O future to hand back.
            Ok((
                response,
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(patterns: &[&str]) -> OutboundPolicy {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        assert_eq!(validate(&patterns), Ok(()));
        OutboundPolicy::new(&patterns)
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        assert!(!policy(&[]).allows("http", "127.0.0.1", 80));
    }

    #[test]
    fn destinations_match_scheme_host_and_port() {
        let p = policy(&["http://10.0.0.5:8080", "https://*.example.com"]);
        assert!(p.allows("http", "10.0.0.5", 8080));
        assert!(!p.allows("http", "10.0.0.5", 8081));
        assert!(!p.allows("https", "10.0.0.5", 8080));
        assert!(p.allows("https", "api.example.com", 443));
        assert!(p.allows("https", "A.B.Example.COM", 443));
        assert!(
            !p.allows("https", "example.com", 443),
            "*. needs a subdomain"
        );
        assert!(!p.allows("https", "evilexample.com", 443));
        assert!(
            !p.allows("https", "api.example.com", 8443),
            "no port: the default"
        );
        assert!(policy(&["*"]).allows("http", "anything", 1));
        assert!(policy(&["http://[::1]:9000"]).allows("http", "[::1]", 9000));
    }

    #[test]
    fn bad_patterns_are_named() {
        for (bad, reason) in [
            ("example.com", "expected `*` or SCHEME://HOST[:PORT]"),
            ("ftp://example.com", "the scheme must be http or https"),
            ("http://example.com/path", "no path"),
            ("http://example.com:http", "the port must be a number"),
            ("http://a.*.com", "`*` may only open the host"),
            ("http://", "the host is empty"),
        ] {
            let err = validate(&[bad.to_owned()]).err().map(|e| e.to_string());
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains(bad) && e.contains(reason)),
                "{bad}: {err:?}"
            );
        }
    }
}
