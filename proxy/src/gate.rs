//! The gate: what every request goes through, whichever path carries it.
//!
//! ```text
//!   Visit::new(method, path, peer)
//!     enter(host, credentials) -> route (host, longest prefix)
//!                              -> CORS: a preflight is answered here, before auth
//!                                 (it carries no credentials); any other request's
//!                                 Origin decides the CORS headers of its answers
//!                              -> auth -> Pass
//!       auth: a signed URL (X-Sluice-* query) -> signature, expiry, method, key
//!             -> the route narrowed by its size and type conditions;
//!             a POST without credentials on a signing route -> the form's
//!             policy is checked by `upload` before its first file byte;
//!             else API key / JWT
//!     admit(peer)              -> a Permit (transfer caps), once a transfer starts
//!   Visit::record(outcome)     -> one access-log line, request and rejection metrics
//! ```
//! Both the fast path (`server`) and the hyper service (`service`) call it;
//! it knows neither: they hand it plain values (the head's strings and
//! bytes, the peer) and get back a route, a permit or a `Reject`. A rule
//! every request must pass (CORS, signed URLs) belongs in `enter`, written
//! once for both paths. `upload` and `download` sit above it and ask it for
//! admission when their transfer starts.
//!
//! Every answer a request gets, success or refusal, on either path, carries
//! `Visit::cors_headers()`: the writers append that one list, so a page can
//! read why it was refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::app::App;
use crate::cors::{self, Decision};
use crate::error::Reject;
use crate::filters;
use crate::limits::Permit;
use crate::metrics::RequestLabels;
use crate::runtime::RouteRt;
use crate::signed::{self, KeyCond, Refused};

/// What a request presents at the gate, from its head.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask<'a> {
    pub host: Option<&'a str>,
    pub authorization: Option<&'a [u8]>,
    pub api_key: Option<&'a [u8]>,
    /// `Origin`.
    pub origin: Option<&'a [u8]>,
    /// `Access-Control-Request-Method` and `-Headers`: only a preflight has them.
    pub request_method: Option<&'a [u8]>,
    pub request_headers: Option<&'a [u8]>,
    /// The request target's query, without the `?`: a signed URL's parameters.
    pub query: Option<&'a str>,
}

/// A request the gate let through: its route, and its path past the route's prefix.
pub struct Pass<'a> {
    /// With a signed URL, the route narrowed by its conditions (`RouteRt::narrowed`).
    pub route: Arc<RouteRt>,
    pub rel: &'a str,
    /// A CORS preflight the policy allows: answer `204` with these headers
    /// and nothing else (it passed no auth). Only ever for `OPTIONS`.
    pub preflight: Option<Vec<(&'static str, String)>>,
    /// A POST let in on the strength of a signed form policy still to come:
    /// `upload::multipart` checks it before accepting a file byte.
    pub form: Option<FormCheck>,
}

/// What a signed form's policy is checked against, besides the route's keys.
#[derive(Debug, Clone)]
pub struct FormCheck {
    /// As the client sent it (Host or :authority), lowercased.
    pub host: String,
    /// The request path as sent.
    pub path: String,
}

/// How a request ended, for the record.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub status: u16,
    pub bytes: u64,
    /// The rule that refused it, if one did.
    pub rule: Option<&'static str>,
    /// How its bytes moved: sendfile, splice, relay, copy, fast or hyper
    /// (plaintext), tls-copy (TLS in user space, through hyper).
    pub via: &'static str,
}

/// What carries a connection's bytes, as the listener accepted it: it
/// decides which zero-copy a path may use, and what records say of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP: the fast path's sendfile and splice, or hyper.
    Plain,
    /// rustls in user space: hyper only, every byte copied (and encrypted)
    /// through user-space buffers.
    Tls,
}

impl Transport {
    /// The `via` of a request hyper served on this connection.
    pub fn hyper_via(self) -> &'static str {
        match self {
            Transport::Plain => "hyper",
            Transport::Tls => "tls-copy",
        }
    }

    /// The `path` label of bytes copied through user-space buffers.
    pub fn copy_path(self) -> &'static str {
        match self {
            Transport::Plain => "copy",
            Transport::Tls => "tls-copy",
        }
    }
}

/// One request's passage through the gate, from its head to its record.
pub struct Visit<'a> {
    method: &'a str,
    path: &'a str,
    peer: SocketAddr,
    started: Instant,
    /// The route it was matched to, even when it was then refused: the
    /// record names its policy.
    route: Option<Arc<RouteRt>>,
    /// The CORS headers its answers carry, decided once the route is known.
    cors: Option<Decision>,
}

impl<'a> Visit<'a> {
    pub fn new(method: &'a str, path: &'a str, peer: SocketAddr) -> Self {
        Self {
            method,
            path,
            peer,
            started: Instant::now(),
            route: None,
            cors: None,
        }
    }

    /// Route, then CORS (a preflight ends here), then authentication:
    /// credentials, a signed URL (checked here, its conditions in the returned
    /// route), or a signed form to come.
    pub fn enter(&mut self, app: &App, ask: &Ask<'_>) -> Result<Pass<'a>, Reject> {
        let active = app.current.load().ok_or_else(|| {
            Reject::NoConfig(
                "the proxy has no configuration yet; see /readyz on the admin port".into(),
            )
        })?;
        let mut route = active
            .route(ask.host, self.path)
            .ok_or(Reject::NoRoute)?
            .clone();
        self.route = Some(route.clone());
        let rel = &self.path[route.route.path_prefix.len()..];
        if let Some(c) = &route.cors {
            if self.method == "OPTIONS"
                && let (Some(origin), Some(method)) = (ask.origin, ask.request_method)
            {
                let headers = c
                    .preflight(origin, method, ask.request_headers)
                    .map_err(Reject::CorsNotAllowed)?;
                return Ok(Pass {
                    route,
                    rel,
                    preflight: Some(headers),
                    form: None,
                });
            }
            self.cors = Some(c.actual(ask.origin));
        }
        let mut form = None;
        if let Some(auth) = &route.auth {
            let signs = !auth.signing_keys().is_empty();
            let no_credentials = ask.authorization.is_none() && ask.api_key.is_none();
            match ask.query.filter(|q| signs && signed::carries(q)) {
                Some(q) => {
                    let narrowed = self.signed_url(&route, auth.signing_keys(), ask, q, rel)?;
                    if let Some(n) = narrowed {
                        route = Arc::new(n);
                    }
                }
                None if signs && no_credentials && self.method == "POST" => {
                    form = Some(FormCheck {
                        host: ask.host.unwrap_or("").to_ascii_lowercase(),
                        path: self.path.to_string(),
                    });
                }
                None if signs && no_credentials && !auth.takes_credentials() => {
                    return Err(Reject::SignatureInvalid(
                        "this route takes signed URLs only, and the request carries no signature"
                            .into(),
                    ));
                }
                None => auth.check(ask.authorization, ask.api_key)?,
            }
        }
        Ok(Pass {
            route,
            rel,
            preflight: None,
            form,
        })
    }

    /// The CORS headers of every answer to this request (none when its
    /// policy has no `cors`, or before a route was found).
    pub fn cors_headers(&self) -> cors::Headers<'_> {
        match (&self.route, self.cors) {
            (Some(r), Some(d)) => r.cors.as_ref().map(|c| c.headers(d)).unwrap_or_default(),
            _ => cors::Headers::default(),
        }
    }

    /// A signed URL: signature, expiry and method (`signed::verify_url`),
    /// then its key condition against the request's key. Its size and type
    /// conditions come back as the route narrowed by them (None: none given).
    fn signed_url(
        &self,
        route: &RouteRt,
        keys: &[Vec<u8>],
        ask: &Ask<'_>,
        query: &str,
        rel: &str,
    ) -> Result<Option<RouteRt>, Reject> {
        let grant = signed::verify_url(
            keys,
            query,
            self.method,
            ask.host.unwrap_or(""),
            self.path,
            &route.route.path_prefix,
            unix_now(),
        )
        .map_err(refusal)?;
        let key_ok = match &grant.key {
            KeyCond::Any => true,
            // A POST's path is a directory its files go under (sanitised names,
            // no '/'): under the prefix, all of them are.
            KeyCond::Prefix(p) => rel_key(rel).is_some_and(|k| k.starts_with(p.as_str())),
            KeyCond::Exact(k) => self.method != "POST" && rel_key(rel).is_some_and(|r| r == *k),
        };
        if !key_ok {
            return Err(Reject::KeyNotAllowed(rel.to_string()));
        }
        Ok((grant.max_size.is_some() || !grant.types.is_empty())
            .then(|| route.narrowed(grant.max_size, &grant.types)))
    }

    /// The policy of the route matched, or "" before one was.
    fn policy(&self) -> &str {
        self.route.as_ref().map_or("", |r| &r.route.policy)
    }

    /// The access-log line and the metrics of a finished request.
    pub fn record(self, app: &App, o: Outcome) {
        let policy = self.policy();
        app.metrics
            .requests
            .get_or_create(&RequestLabels {
                method: method_label(self.method),
                policy: policy.to_string(),
                status: o.status,
            })
            .inc();
        if let Some(rule) = o.rule {
            app.metrics.reject(rule);
        }
        tracing::info!(
            target: "access",
            method = self.method,
            path = self.path,
            policy,
            status = o.status,
            bytes = o.bytes,
            duration_ms = self.started.elapsed().as_secs_f64() * 1e3,
            rule = o.rule.unwrap_or(""),
            peer = %self.peer,
            via = o.via,
            "request"
        );
    }
}

/// The object key a path past the prefix names (a POST's directory keeps its
/// trailing '/'), decoded; None when it is no key.
fn rel_key(rel: &str) -> Option<String> {
    let trimmed = rel.trim_end_matches('/');
    let key = filters::parse_key(trimmed).ok()?;
    Some(if trimmed.len() < rel.len() {
        format!("{key}/")
    } else {
        key
    })
}

/// The system clock in unix seconds: what signatures expire against.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A signature refused, as the client sees it.
pub fn refusal(r: Refused) -> Reject {
    match r {
        Refused::Invalid(m) => Reject::SignatureInvalid(m),
        Refused::Expired => Reject::SignatureExpired,
    }
}

/// Admission: a transfer slot within the proxy's and the client's caps.
pub fn admit(app: &App, peer: SocketAddr) -> Result<Permit, Reject> {
    app.limits.admit(peer.ip())
}

/// A request's method as a label: extension methods are a client's choice,
/// and a label must not be (each value is a series kept for the process's life).
fn method_label(m: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    KNOWN.iter().find(|k| **k == m).copied().unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_methods_share_one_label() {
        assert_eq!(method_label("PUT"), "PUT");
        assert_eq!(method_label("BREW"), "other");
        assert_eq!(method_label("get"), "other");
    }
}
