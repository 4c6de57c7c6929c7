//! CORS per policy: the Fetch standard's CORS protocol as a server speaks it
//! (https://fetch.spec.whatwg.org/#http-cors-protocol).
//!
//! ```text
//!   OPTIONS + Origin + Access-Control-Request-Method   (a preflight: no credentials)
//!     -> preflight(): origin, method, each requested header allowed?
//!          yes -> 204 headers: Allow-Origin, Allow-Methods, Allow-Headers, Max-Age,
//!                 Allow-Credentials, Vary
//!          no  -> why, in words (the gate refuses: 403 cors_not_allowed)
//!   any other request -> actual(Origin) -> a Decision kept on the gate's Visit
//!     -> headers(): what every answer to it carries, success or refusal
//! ```
//! Prepared once per configuration (`Cors::new`): the joined header values
//! are built here, so an answer only copies `&str`s; an allowed origin is
//! echoed from the policy's own list (it matched exactly), so nothing is
//! allocated per request. Plain functions of bytes, unit-tested below.

use sluice_policy::RouteCors;

use crate::error::PREFLIGHT_VARY;

/// Response headers a page needs to read sluice's answers, exposed on every
/// policy with CORS besides its own `exposeHeaders` (Content-Type,
/// Content-Length, Last-Modified are exposed by browsers anyway).
pub const ALWAYS_EXPOSED: &[&str] = &[
    "etag",
    "content-range",
    "accept-ranges",
    "retry-after",
    "allow",
    "www-authenticate",
];

/// A route's CORS rules, ready to answer.
#[derive(Debug)]
pub struct Cors {
    origins: Vec<String>,
    /// `*` in allowedOrigins (never with credentials: refused at load).
    any_origin: bool,
    credentials: bool,
    methods: Vec<String>,
    /// `Access-Control-Allow-Methods`: the allowed methods, joined.
    allow_methods: String,
    /// Lowercase.
    headers: Vec<String>,
    /// `*` in allowedHeaders: any header but Authorization, which the Fetch
    /// standard never lets a wildcard cover.
    any_header: bool,
    /// `Access-Control-Expose-Headers`.
    expose: String,
    max_age: Option<String>,
}

/// What the answers to one actual (not preflight) request carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No Origin, or one not allowed: only `Vary: Origin`, for caches.
    Vary,
    /// An allowed origin: `allowed_origins[i]`, echoed.
    Origin(usize),
    /// A `*` policy: the same headers for every request, so no Vary (Fetch,
    /// "CORS protocol and HTTP caches").
    Any,
}

/// At most four response headers, borrowed from the route's `Cors`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Headers<'a> {
    list: [(&'static str, &'a str); 4],
    len: usize,
}

impl<'a> Headers<'a> {
    fn push(&mut self, k: &'static str, v: &'a str) {
        self.list[self.len] = (k, v);
        self.len += 1;
    }

    pub fn as_slice(&self) -> &[(&'static str, &'a str)] {
        &self.list[..self.len]
    }
}

impl Cors {
    pub fn new(c: &RouteCors) -> Self {
        let mut expose: Vec<&str> = ALWAYS_EXPOSED.to_vec();
        for h in &c.expose_headers {
            if !expose.contains(&h.as_str()) {
                expose.push(h);
            }
        }
        Self {
            origins: c.allowed_origins.clone(),
            any_origin: c.allowed_origins.iter().any(|o| o == "*"),
            credentials: c.allow_credentials,
            methods: c.allowed_methods.clone(),
            allow_methods: c.allowed_methods.join(", "),
            headers: c.allowed_headers.clone(),
            any_header: c.allowed_headers.iter().any(|h| h == "*"),
            expose: expose.join(", "),
            max_age: c.max_age.map(|s| s.to_string()),
        }
    }

    /// The request's origin among the allowed ones (exact bytes: browsers
    /// serialise origins one way, and the policy's are checked to be that way).
    fn origin(&self, origin: &[u8]) -> Option<Decision> {
        if self.any_origin {
            return Some(Decision::Any);
        }
        self.origins
            .iter()
            .position(|o| o.as_bytes() == origin)
            .map(Decision::Origin)
    }

    /// The decision for an actual request with this `Origin` header (or none).
    pub fn actual(&self, origin: Option<&[u8]>) -> Decision {
        if self.any_origin {
            return Decision::Any;
        }
        origin
            .and_then(|o| self.origin(o))
            .unwrap_or(Decision::Vary)
    }

    fn allow_origin(&self, d: Decision) -> &str {
        match d {
            Decision::Origin(i) => &self.origins[i],
            _ => "*",
        }
    }

    /// The headers every answer to an actual request carries under `d`.
    pub fn headers(&self, d: Decision) -> Headers<'_> {
        let mut h = Headers::default();
        if d != Decision::Vary {
            h.push("access-control-allow-origin", self.allow_origin(d));
            if self.credentials {
                h.push("access-control-allow-credentials", "true");
            }
            h.push("access-control-expose-headers", &self.expose);
        }
        if d != Decision::Any {
            h.push("vary", "Origin");
        }
        h
    }

    /// A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`):
    /// the 204's headers, or why it is refused.
    pub fn preflight(
        &self,
        origin: &[u8],
        method: &[u8],
        request_headers: Option<&[u8]>,
    ) -> Result<Vec<(&'static str, String)>, String> {
        let shown = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let d = self.origin(origin).ok_or_else(|| {
            format!(
                "origin {:?} is not allowed by this policy's cors.allowedOrigins",
                shown(origin)
            )
        })?;
        let method = method.trim_ascii();
        // Methods are case-sensitive; browsers upper-case the standard ones.
        if !self.methods.iter().any(|m| m.as_bytes() == method) {
            return Err(format!(
                "method {:?} is not allowed for cross-origin requests here; allowed: {}",
                shown(method),
                self.allow_methods
            ));
        }
        let mut asked = Vec::new();
        for name in request_headers
            .unwrap_or_default()
            .split(|b| *b == b',')
            .map(|n| n.trim_ascii())
            .filter(|n| !n.is_empty())
        {
            let name = shown(name).to_ascii_lowercase();
            // Only a token is a header name, and only one can be echoed back.
            let allowed = self.headers.contains(&name)
                || (self.any_header && name != "authorization" && is_token(&name));
            if !allowed {
                return Err(format!(
                    "request header {name:?} is not allowed for cross-origin requests here; allowed: {}",
                    self.headers.join(", ")
                ));
            }
            asked.push(name);
        }
        let mut out = vec![
            (
                "access-control-allow-origin",
                self.allow_origin(d).to_string(),
            ),
            ("access-control-allow-methods", self.allow_methods.clone()),
        ];
        // The names asked for, echoed: a list (never `*`) holds for requests
        // with credentials and for Authorization alike.
        if !asked.is_empty() {
            out.push(("access-control-allow-headers", asked.join(", ")));
        }
        if let Some(s) = &self.max_age {
            out.push(("access-control-max-age", s.clone()));
        }
        if self.credentials {
            out.push(("access-control-allow-credentials", "true".into()));
        }
        out.push(("vary", PREFLIGHT_VARY.into()));
        Ok(out)
    }
}

/// An HTTP token (RFC 9110 `field-name`).
fn is_token(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        let c = sluice_policy::compile::compile_cors(&sluice_policy::crd::CorsSpec {
            allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
            allowed_headers: Some(vec!["x-api-key".into(), "content-type".into()]),
            max_age: Some(600),
            allow_credentials: credentials,
            ..Default::default()
        })
        .unwrap();
        Cors::new(&c)
    }

    fn get<'a>(h: &'a [(&'static str, String)], k: &str) -> Option<&'a str> {
        h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn preflight_allowed_echoes_origin_and_asked_headers() {
        let c = cors(&["https://app.example.com"], true);
        let h = c
            .preflight(
                b"https://app.example.com",
                b"PUT",
                Some(b"content-type,X-Api-Key"),
            )
            .unwrap();
        assert_eq!(
            get(&h, "access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(
            get(&h, "access-control-allow-methods"),
            Some("GET, HEAD, PUT, POST")
        );
        assert_eq!(
            get(&h, "access-control-allow-headers"),
            Some("content-type, x-api-key")
        );
        assert_eq!(get(&h, "access-control-max-age"), Some("600"));
        assert_eq!(get(&h, "access-control-allow-credentials"), Some("true"));
        assert_eq!(get(&h, "vary"), Some(PREFLIGHT_VARY));
    }

    #[test]
    fn preflight_refusals_say_what() {
        let c = cors(&["https://app.example.com"], false);
        let e = c
            .preflight(b"https://evil.example", b"PUT", None)
            .unwrap_err();
        assert!(e.contains("origin \"https://evil.example\""), "{e}");
        // Origins compare exactly: a trailing slash or capitals are another origin.
        assert!(
            c.preflight(b"https://app.example.com/", b"PUT", None)
                .is_err()
        );
        assert!(
            c.preflight(b"https://APP.example.com", b"PUT", None)
                .is_err()
        );
        let e = c
            .preflight(b"https://app.example.com", b"DELETE", None)
            .unwrap_err();
        assert!(e.contains("method \"DELETE\""), "{e}");
        // Methods are case-sensitive.
        assert!(
            c.preflight(b"https://app.example.com", b"put", None)
                .is_err()
        );
        let e = c
            .preflight(
                b"https://app.example.com",
                b"PUT",
                Some(b"x-api-key, x-evil"),
            )
            .unwrap_err();
        assert!(e.contains("request header \"x-evil\""), "{e}");
    }

    #[test]
    fn wildcards_never_cover_authorization() {
        let c = Cors::new(&RouteCors {
            allowed_origins: vec!["*".into()],
            allowed_methods: vec!["PUT".into()],
            allowed_headers: vec!["*".into()],
            ..Default::default()
        });
        let h = c
            .preflight(b"https://any.example", b"PUT", Some(b"x-anything"))
            .unwrap();
        assert_eq!(get(&h, "access-control-allow-origin"), Some("*"));
        assert_eq!(get(&h, "access-control-allow-credentials"), None);
        assert_eq!(get(&h, "access-control-max-age"), None);
        assert!(
            c.preflight(b"https://any.example", b"PUT", Some(b"authorization"))
                .is_err()
        );
        assert!(
            c.preflight(b"https://any.example", b"PUT", Some(b"x-a, x b"))
                .is_err()
        );
        // `null` (sandboxed frames, file:) is an origin `*` shares with.
        assert!(c.preflight(b"null", b"PUT", None).is_ok());
    }

    #[test]
    fn actual_answers_carry_allow_origin_only_for_allowed_origins() {
        let c = cors(&["https://a.example", "https://app.example.com"], true);
        let d = c.actual(Some(b"https://app.example.com"));
        assert_eq!(d, Decision::Origin(1));
        let h = c.headers(d);
        assert_eq!(
            h.as_slice(),
            [
                ("access-control-allow-origin", "https://app.example.com"),
                ("access-control-allow-credentials", "true"),
                (
                    "access-control-expose-headers",
                    "etag, content-range, accept-ranges, retry-after, allow, www-authenticate"
                ),
                ("vary", "Origin"),
            ]
        );
        for o in [None, Some(&b"https://evil.example"[..])] {
            assert_eq!(c.headers(c.actual(o)).as_slice(), [("vary", "Origin")]);
        }
        let any = cors(&["*"], false);
        let h = any.headers(any.actual(None));
        assert_eq!(h.as_slice()[0], ("access-control-allow-origin", "*"));
        assert!(h.as_slice().iter().all(|(k, _)| *k != "vary"));
    }
}
