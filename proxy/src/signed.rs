//! Signed URLs and signed form policies: the canonical string, HMAC-SHA256,
//! and what a signature grants. Pure: strings and bytes in, values out.
//!
//! ```text
//!   URL:  ?X-Sluice-Methods&X-Sluice-Expires[&conditions]&X-Sluice-Signature
//!         -> parse (unknown X-Sluice-*, any other parameter: refused)
//!         -> canonical(method list, host, path, expires, key, max size, types)
//!         -> HMAC with every key, compared in constant time
//!         -> then the expiry, then the method -> Grant (the conditions)
//!   form: policy (base64 JSON) + x-sluice-signature fields
//!         -> HMAC over the base64 text -> expiry -> FormPolicy (its conditions)
//! ```
//! The gate calls `verify_url`; `upload` calls `verify_form` when a form's
//! fields arrive; `sluice-proxy sign` and `sign-form` call `sign_url` and
//! `sign_form`, so the signer and the checker share one canonical form.
//! Trade-off: every key is tried every time (no key id in the URL), so a
//! check costs one HMAC per key; Secrets hold one or two keys.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The first line of the canonical string; the value of `X-Sluice-Algorithm` in forms.
pub const ALGORITHM: &str = "SLUICE-HMAC-SHA256";

pub const P_METHODS: &str = "X-Sluice-Methods";
pub const P_EXPIRES: &str = "X-Sluice-Expires";
pub const P_KEY: &str = "X-Sluice-Key";
pub const P_KEY_PREFIX: &str = "X-Sluice-Key-Prefix";
pub const P_MAX_SIZE: &str = "X-Sluice-Max-Size";
pub const P_TYPES: &str = "X-Sluice-Types";
pub const P_SIGNATURE: &str = "X-Sluice-Signature";

/// Form fields.
pub const F_POLICY: &str = "policy";
pub const F_SIGNATURE: &str = "x-sluice-signature";
pub const F_ALGORITHM: &str = "x-sluice-algorithm";
pub const F_REDIRECT: &str = "success_action_redirect";
pub const F_STATUS: &str = "success_action_status";

const METHODS: [&str; 4] = ["GET", "HEAD", "PUT", "POST"];

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Bad or missing signature, a parameter that is not allowed, a method not signed.
    Invalid(String),
    /// A good signature past its expiry.
    Expired,
}

/// How a signed URL narrows the keys it may be used for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCond {
    Any,
    Exact(String),
    Prefix(String),
}

/// What a signed URL says, once its signature checks out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub methods: Vec<String>,
    pub expires: i64,
    pub key: KeyCond,
    pub max_size: Option<u64>,
    /// Media type patterns (`image/png`, `image/*`), lowercase; empty: any.
    pub types: Vec<String>,
}

impl Grant {
    /// The canonical string signed (see the README's "Signed URLs").
    /// `path`: the request path as sent, or, with a key prefix, the route's prefix.
    pub fn canonical(&self, host: &str, path: &str) -> String {
        let mut out = Vec::with_capacity(128);
        self.canonical_into(host, path, |b| out.extend_from_slice(b));
        // Every piece is a &str, and lowercasing ASCII keeps it UTF-8.
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// The canonical string, piece by piece: a check feeds it to the MAC
    /// without building it (no allocation on the request path).
    fn canonical_into(&self, host: &str, path: &str, mut put: impl FnMut(&[u8])) {
        let mut itoa = itoa::Buffer::new();
        put(ALGORITHM.as_bytes());
        put(b"\n");
        for (i, m) in self.methods.iter().enumerate() {
            if i > 0 {
                put(b",");
            }
            put(m.as_bytes());
        }
        put(b"\n");
        for b in host.bytes() {
            put(&[b.to_ascii_lowercase()]);
        }
        put(b"\n");
        put(path.as_bytes());
        put(b"\n");
        put(itoa.format(self.expires).as_bytes());
        put(b"\n");
        match &self.key {
            KeyCond::Any => {}
            KeyCond::Exact(k) => {
                put(b"key:");
                put(k.as_bytes());
            }
            KeyCond::Prefix(p) => {
                put(b"prefix:");
                put(p.as_bytes());
            }
        }
        put(b"\n");
        if let Some(n) = self.max_size {
            put(itoa.format(n).as_bytes());
        }
        put(b"\n");
        for (i, t) in self.types.iter().enumerate() {
            if i > 0 {
                put(b",");
            }
            put(t.as_bytes());
        }
    }

    /// The query string of a URL carrying this grant, signed with `key`.
    pub fn query(&self, host: &str, path: &str, key: &[u8]) -> String {
        let sig = hex::encode(mac(key, self.canonical(host, path).as_bytes()));
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair(P_METHODS, &self.methods.join(","));
        q.append_pair(P_EXPIRES, &self.expires.to_string());
        match &self.key {
            KeyCond::Any => {}
            KeyCond::Exact(k) => {
                q.append_pair(P_KEY, k);
            }
            KeyCond::Prefix(p) => {
                q.append_pair(P_KEY_PREFIX, p);
            }
        }
        if let Some(n) = self.max_size {
            q.append_pair(P_MAX_SIZE, &n.to_string());
        }
        if !self.types.is_empty() {
            q.append_pair(P_TYPES, &self.types.join(","));
        }
        q.append_pair(P_SIGNATURE, &sig);
        q.finish()
    }
}

/// Does a query string ask for a signed-URL check (any `X-Sluice-` parameter)?
pub fn carries(query: &str) -> bool {
    query
        .split('&')
        .any(|p| p.len() >= 9 && p.as_bytes()[..9].eq_ignore_ascii_case(b"x-sluice-"))
}

/// HMAC-SHA256 of `msg` with `key`.
pub fn mac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    mac_of(key, |m| m.update(msg))
}

/// HMAC-SHA256 with `key` of what `feed` gives it.
fn mac_of(key: &[u8], feed: impl FnOnce(&mut Hmac<Sha256>)) -> [u8; 32] {
    // HMAC takes keys of any length: new_from_slice cannot fail.
    let mut m = <Hmac<Sha256>>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    feed(&mut m);
    m.finalize().into_bytes().into()
}

/// Whether `sig` (hex) is the MAC of what `feed` gives it under any of
/// `keys`: every key is tried, the comparisons run in constant time and none
/// stops early.
fn signed_by_any(keys: &[Vec<u8>], sig: &str, feed: impl Fn(&mut Hmac<Sha256>)) -> bool {
    let mut given = [0u8; 32];
    if hex::decode_to_slice(sig.trim(), &mut given).is_err() {
        return false;
    }
    let mut ok = subtle::Choice::from(0u8);
    for k in keys {
        ok |= mac_of(k, &feed).ct_eq(&given);
    }
    ok.into()
}

fn invalid(m: impl Into<String>) -> Refused {
    Refused::Invalid(m.into())
}

/// Checks a signed URL: the signature (with any key), then the expiry against
/// `now` (unix seconds; valid while `now <= expires`, no grace), then that
/// `method` was signed. `path`: the request path as sent; `prefix`: the
/// route's path prefix (the signed path of a key-prefix URL).
pub fn verify_url(
    keys: &[Vec<u8>],
    query: &str,
    method: &str,
    host: &str,
    path: &str,
    prefix: &str,
    now: i64,
) -> Result<Grant, Refused> {
    let (grant, sig) = parse_query(query)?;
    let signed_path = match grant.key {
        KeyCond::Prefix(_) => prefix,
        _ => path,
    };
    if !signed_by_any(keys, &sig, |m| {
        grant.canonical_into(host, signed_path, |b| m.update(b))
    }) {
        return Err(invalid("the signature does not match this URL"));
    }
    if now > grant.expires {
        return Err(Refused::Expired);
    }
    if !grant.methods.iter().any(|m| m == method) {
        return Err(invalid(format!("method {method} is not signed")));
    }
    Ok(grant)
}

/// One `name=value` of a query, decoded as `application/x-www-form-urlencoded`
/// (what `form_urlencoded::parse` does), borrowed when nothing is escaped,
/// as in the URLs `sign` writes.
fn param(p: &str) -> (Cow<'_, str>, Cow<'_, str>) {
    let (k, v) = p.split_once('=').unwrap_or((p, ""));
    (form_decode(k), form_decode(v))
}

fn form_decode(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b == b'%' || b == b'+') {
        let plus = s.replace('+', " ");
        Cow::Owned(
            percent_encoding::percent_decode_str(&plus)
                .decode_utf8_lossy()
                .into_owned(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

/// The grant and signature a query carries; refuses anything else in it.
fn parse_query(query: &str) -> Result<(Grant, String), Refused> {
    let mut methods = None;
    let mut expires = None;
    let mut key = KeyCond::Any;
    let mut max_size = None;
    let mut types = Vec::new();
    let mut sig = None;
    // One bit per known parameter (anything else is refused below).
    let mut seen = 0u8;
    for (k, v) in query.split('&').filter(|p| !p.is_empty()).map(param) {
        let bit = [
            P_METHODS,
            P_EXPIRES,
            P_KEY,
            P_KEY_PREFIX,
            P_MAX_SIZE,
            P_TYPES,
            P_SIGNATURE,
        ]
        .iter()
        .position(|p| *p == k)
        .map_or(0, |i| 1u8 << i);
        if seen & bit != 0 {
            return Err(invalid(format!("parameter {k} given twice")));
        }
        seen |= bit;
        if v.chars().any(char::is_control) {
            return Err(invalid(format!("parameter {k} has control characters")));
        }
        match &*k {
            P_METHODS => {
                let list: Vec<String> = v.split(',').map(str::to_string).collect();
                if list.iter().any(|m| !METHODS.contains(&m.as_str())) {
                    return Err(invalid(format!(
                        "{P_METHODS}: {v:?} is not a list of GET, HEAD, PUT, POST"
                    )));
                }
                methods = Some(list);
            }
            P_EXPIRES => {
                expires = Some(
                    v.parse::<i64>()
                        .map_err(|_| invalid(format!("{P_EXPIRES}: {v:?} is not unix seconds")))?,
                );
            }
            P_KEY | P_KEY_PREFIX if key != KeyCond::Any => {
                return Err(invalid(format!("{P_KEY} and {P_KEY_PREFIX} together")));
            }
            P_KEY => key = KeyCond::Exact(v.into_owned()),
            P_KEY_PREFIX => key = KeyCond::Prefix(v.into_owned()),
            P_MAX_SIZE => {
                max_size = Some(v.parse::<u64>().map_err(|_| {
                    invalid(format!("{P_MAX_SIZE}: {v:?} is not a number of bytes"))
                })?);
            }
            P_TYPES => {
                types = v.split(',').map(str::to_string).collect();
                if types.iter().any(|t| !is_type_pattern(t)) {
                    return Err(invalid(format!(
                        "{P_TYPES}: {v:?} is not a list of lowercase types such as image/png or image/*"
                    )));
                }
            }
            P_SIGNATURE => sig = Some(v.into_owned()),
            other => {
                return Err(invalid(format!(
                    "query parameter {other:?} is not part of a signed URL"
                )));
            }
        }
    }
    let sig = sig.ok_or_else(|| invalid(format!("no {P_SIGNATURE}")))?;
    let methods = methods.ok_or_else(|| invalid(format!("no {P_METHODS}")))?;
    let expires = expires.ok_or_else(|| invalid(format!("no {P_EXPIRES}")))?;
    Ok((
        Grant {
            methods,
            expires,
            key,
            max_size,
            types,
        },
        sig,
    ))
}

/// `image/png`, `image/*` or `*/*`, lowercase.
pub fn is_type_pattern(t: &str) -> bool {
    let tok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"!#$&-^_.+".contains(&c))
    };
    match t.split_once('/') {
        Some((a, b)) => (a == "*" && b == "*") || (tok(a) && (b == "*" || tok(b))),
        None => false,
    }
}

/// A string condition of a form policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Eq(String),
    StartsWith(String),
}

impl Match {
    pub fn allows(&self, v: &str) -> bool {
        match self {
            Match::Eq(e) => v == e,
            Match::StartsWith(p) => v.starts_with(p.as_str()),
        }
    }
}

/// A verified form policy: what its conditions require.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FormPolicy {
    pub expires: i64,
    pub host: Option<Match>,
    pub path: Option<Match>,
    pub key: Option<Match>,
    /// `content-length-range`: each file's size, inclusive.
    pub min_size: u64,
    pub max_size: Option<u64>,
    /// From `$Content-Type` conditions, as allowlist patterns.
    pub types: Vec<String>,
    pub redirect: Option<Match>,
    pub status: Option<Match>,
}

/// Checks a form's policy: the signature over the base64 text (with any
/// key), then the expiry, then that the document reads.
pub fn verify_form(
    keys: &[Vec<u8>],
    policy_b64: &str,
    sig: &str,
    now: i64,
) -> Result<FormPolicy, Refused> {
    let policy_b64 = policy_b64.trim();
    if !signed_by_any(keys, sig, |m| m.update(policy_b64.as_bytes())) {
        return Err(invalid("the policy's signature does not match"));
    }
    let p = parse_policy(policy_b64)?;
    if now > p.expires {
        return Err(Refused::Expired);
    }
    Ok(p)
}

fn parse_policy(b64: &str) -> Result<FormPolicy, Refused> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| invalid("policy is not base64"))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("policy is not JSON: {e}")))?;
    let mut p = FormPolicy {
        expires: match doc.get("expiration") {
            Some(serde_json::Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| invalid("expiration is not unix seconds"))?,
            Some(serde_json::Value::String(s)) => s
                .parse::<jiff::Timestamp>()
                .map_err(|e| invalid(format!("expiration {s:?} is not RFC 3339: {e}")))?
                .as_second(),
            _ => return Err(invalid("policy has no expiration")),
        },
        ..FormPolicy::default()
    };
    let conditions = doc
        .get("conditions")
        .and_then(|c| c.as_array())
        .ok_or_else(|| invalid("policy has no conditions list"))?;
    for c in conditions {
        let (field, m) = match c {
            serde_json::Value::Object(o) if o.len() == 1 => {
                let (k, v) = o.iter().next().unwrap_or_else(|| unreachable!());
                (k.clone(), Match::Eq(string(v, k)?))
            }
            serde_json::Value::Array(a) if a.len() == 3 => {
                let op = a[0].as_str().unwrap_or("").to_ascii_lowercase();
                if op == "content-length-range" {
                    let n = |v: &serde_json::Value| {
                        v.as_u64()
                            .ok_or_else(|| invalid("content-length-range takes two numbers"))
                    };
                    let (lo, hi) = (n(&a[1])?, n(&a[2])?);
                    if lo > hi {
                        return Err(invalid("content-length-range: min above max"));
                    }
                    p.min_size = lo;
                    p.max_size = Some(hi);
                    continue;
                }
                let field = a[1]
                    .as_str()
                    .and_then(|f| f.strip_prefix('$'))
                    .ok_or_else(|| invalid(format!("condition {c}: the field must be $name")))?
                    .to_string();
                let v = string(&a[2], &field)?;
                let m = match op.as_str() {
                    "eq" => Match::Eq(v),
                    "starts-with" => Match::StartsWith(v),
                    _ => return Err(invalid(format!("condition {c}: unknown operator"))),
                };
                (field, m)
            }
            _ => return Err(invalid(format!("condition {c} is not one sluice knows"))),
        };
        match field.to_ascii_lowercase().as_str() {
            "host" => p.host = Some(m),
            "path" => p.path = Some(m),
            "key" => p.key = Some(m),
            "content-type" => p.types.push(type_pattern(&m)?),
            F_REDIRECT => p.redirect = Some(m),
            F_STATUS => p.status = Some(m),
            _ => {
                return Err(invalid(format!(
                    "condition on {field:?}: sluice knows host, path, key, Content-Type, \
                     content-length-range, {F_REDIRECT} and {F_STATUS}"
                )));
            }
        }
    }
    if p.host.is_none() || p.path.is_none() {
        return Err(invalid(
            "a form policy must name its host and path ($host, $path conditions)",
        ));
    }
    Ok(p)
}

fn string(v: &serde_json::Value, field: &str) -> Result<String, Refused> {
    v.as_str().map(str::to_string).ok_or_else(|| {
        invalid(format!(
            "condition on {field:?}: the value must be a string"
        ))
    })
}

/// A `$Content-Type` condition as an allowlist pattern: `eq` a type, or
/// `starts-with` "" (any), "image/" (`image/*`) or a whole type.
fn type_pattern(m: &Match) -> Result<String, Refused> {
    let t = match m {
        Match::Eq(t) => t.to_ascii_lowercase(),
        Match::StartsWith(p) if p.is_empty() => "*/*".into(),
        Match::StartsWith(p) if p.ends_with('/') => format!("{}*", p.to_ascii_lowercase()),
        Match::StartsWith(p) => p.to_ascii_lowercase(),
    };
    if is_type_pattern(&t) {
        Ok(t)
    } else {
        Err(invalid(format!(
            "Content-Type condition {m:?}: a prefix must end with '/' (image/) or be a whole type"
        )))
    }
}

/// A signed form's hidden fields (`sluice-proxy sign-form`): the policy's
/// base64 text and its signature, plus the redirect when one is given.
pub fn sign_form(policy_json: &str, key: &[u8]) -> (String, String) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(policy_json);
    let sig = hex::encode(mac(key, b64.as_bytes()));
    (b64, sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query is split by hand (borrowed, no allocation when nothing is
    /// escaped): it must decode as `form_urlencoded` does.
    #[test]
    fn params_decode_as_form_urlencoded() {
        let q = "X-Sluice-Key-Prefix=users%2F42%2F&a+b=c+d&X-Sluice-Types=image%2Fpng,image/jpeg&e=&f&%E2%82%AC=%ff";
        let ours: Vec<(String, String)> = q
            .split('&')
            .map(param)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let theirs: Vec<(String, String)> = url::form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(ours, theirs);
        assert!(matches!(
            param("X-Sluice-Expires=1767225600").1,
            Cow::Borrowed(_)
        ));
    }

    /// The README's test vector.
    #[test]
    fn test_vector() {
        let g = Grant {
            methods: vec!["PUT".into()],
            expires: 1_767_225_600,
            key: KeyCond::Any,
            max_size: Some(10_485_760),
            types: vec!["image/png".into(), "image/jpeg".into()],
        };
        let c = g.canonical("files.example.com", "/up/a.png");
        assert_eq!(
            c,
            "SLUICE-HMAC-SHA256\nPUT\nfiles.example.com\n/up/a.png\n1767225600\n\n10485760\nimage/png,image/jpeg"
        );
        let sig = hex::encode(mac(b"test-key-1", c.as_bytes()));
        assert_eq!(sig, VECTOR_SIG);
        let q = g.query("files.example.com", "/up/a.png", b"test-key-1");
        assert_eq!(
            q,
            format!(
                "X-Sluice-Methods=PUT&X-Sluice-Expires=1767225600&X-Sluice-Max-Size=10485760&X-Sluice-Types=image%2Fpng%2Cimage%2Fjpeg&X-Sluice-Signature={VECTOR_SIG}"
            )
        );
        let keys = vec![b"old".to_vec(), b"test-key-1".to_vec()];
        let ok = verify_url(
            &keys,
            &q,
            "PUT",
            "Files.Example.com",
            "/up/a.png",
            "/up/",
            1_767_225_600,
        );
        assert_eq!(ok, Ok(g));
        let late = verify_url(
            &keys,
            &q,
            "PUT",
            "files.example.com",
            "/up/a.png",
            "/up/",
            1_767_225_601,
        );
        assert_eq!(late, Err(Refused::Expired));
        let get = verify_url(
            &keys,
            &q,
            "GET",
            "files.example.com",
            "/up/a.png",
            "/up/",
            0,
        );
        assert!(matches!(get, Err(Refused::Invalid(m)) if m.contains("not signed")));
        let other = verify_url(
            &keys,
            &q,
            "PUT",
            "files.example.com",
            "/up/b.png",
            "/up/",
            0,
        );
        assert!(matches!(other, Err(Refused::Invalid(m)) if m.contains("does not match")));
        let twice = format!("{q}&X-Sluice-Expires=1");
        assert!(
            verify_url(
                &keys,
                &twice,
                "PUT",
                "files.example.com",
                "/up/a.png",
                "/up/",
                0
            )
            .is_err()
        );
        let more = format!("{q}&x=1");
        assert!(
            verify_url(
                &keys,
                &more,
                "PUT",
                "files.example.com",
                "/up/a.png",
                "/up/",
                0
            )
            .is_err()
        );
        let unknown = format!("{q}&X-Sluice-Foo=1");
        assert!(
            verify_url(
                &keys,
                &unknown,
                "PUT",
                "files.example.com",
                "/up/a.png",
                "/up/",
                0
            )
            .is_err()
        );
        let wider = q.replace("10485760", "10485761");
        assert!(
            verify_url(
                &keys,
                &wider,
                "PUT",
                "files.example.com",
                "/up/a.png",
                "/up/",
                0
            )
            .is_err()
        );
    }

    const VECTOR_SIG: &str = "f006ee5a4fd9d54420a717d5168965cebeafdb03b28dfb8d0145d8a3192b76ff";

    #[test]
    fn key_prefix_signs_the_route_prefix() {
        let g = Grant {
            methods: vec!["PUT".into(), "GET".into()],
            expires: 100,
            key: KeyCond::Prefix("users/42/".into()),
            max_size: None,
            types: vec![],
        };
        let q = g.query("h:8080", "/up/", b"k");
        let keys = vec![b"k".to_vec()];
        let got = verify_url(&keys, &q, "GET", "h:8080", "/up/users/42/x.png", "/up/", 50);
        assert_eq!(got, Ok(g));
    }

    #[test]
    fn form_policy() {
        let json = r#"{"expiration": "2026-01-01T00:00:00Z", "conditions": [
            {"host": "files.example.com"}, ["starts-with", "$path", "/up/"],
            ["starts-with", "$key", "users/42/"], ["content-length-range", 1, 1000],
            ["starts-with", "$Content-Type", "image/"],
            {"success_action_redirect": "https://app.example.com/done"}]}"#;
        let (b64, sig) = sign_form(json, b"k");
        let keys = vec![b"k".to_vec()];
        let p = verify_form(&keys, &b64, &sig, 1_767_225_600).unwrap();
        assert_eq!(p.types, vec!["image/*"]);
        assert_eq!(p.max_size, Some(1000));
        assert_eq!(p.min_size, 1);
        assert_eq!(p.key, Some(Match::StartsWith("users/42/".into())));
        assert_eq!(
            verify_form(&keys, &b64, &sig, 1_767_225_601),
            Err(Refused::Expired)
        );
        assert!(verify_form(&keys, &b64, &sig.replace('a', "b"), 0).is_err());
        let (b64, sig) = sign_form(r#"{"expiration": 5, "conditions": [{"host": "h"}]}"#, b"k");
        assert!(
            matches!(verify_form(&keys, &b64, &sig, 0), Err(Refused::Invalid(m)) if m.contains("path"))
        );
        let (b64, sig) = sign_form(
            r#"{"expiration": 5, "conditions": [{"host": "h"}, {"path": "/"}, {"acl": "x"}]}"#,
            b"k",
        );
        assert!(verify_form(&keys, &b64, &sig, 0).is_err());
    }
}
