//! The admin port: `/metrics` (Prometheus text), `/healthz` (the process
//! runs), `/readyz` (a configuration is loaded and being served, which
//! documents of the policies folder were left out of it, and why, and which
//! policies cannot serve now, with why: `notReady` (an https engine failing
//! TLS, an S3 route without credentials)), and the operator's push API:
//!
//! ```text
//!   PUT /v1/config          ProxyConfig JSON -> build, swap, persist -> {"version"}
//!   GET /v1/config/version  -> {"version"} (null before any config)
//!   both: Authorization: Bearer <the token in --admin-token-file>, else 401
//! ```
//!
//! Kept on its own listener so probes and scrapes never compete with
//! transfers for the data port's limits, and never need a route. With
//! `--admin-tls-cert/--admin-tls-key` it speaks TLS only (HTTP/1.1; `tls`,
//! the same module and reload as the client listener): the push carries
//! Secrets' key hashes and engine credentials.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;
use crate::source::Source;
use crate::tls::Tls;

/// Largest pushed config: a thousand policies compile to well under 1 MiB.
const MAX_CONFIG_BYTES: usize = 32 << 20;

/// What the admin port serves from.
pub struct Admin {
    pub app: Arc<App>,
    pub source: Arc<Source>,
    /// The push API's bearer token, read on every request (a mounted Secret may rotate).
    pub token_file: Option<std::path::PathBuf>,
}

pub async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    tls: Option<Arc<Tls>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let admin = admin.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(tls) => {
                    if let Some(stream) = tls.accept(stream, peer).await {
                        connection(admin, stream).await;
                    }
                }
                None => connection(admin, stream).await,
            }
        });
    }
}

async fn connection<I>(admin: Arc<Admin>, stream: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let admin = admin.clone();
        async move { Ok::<_, Infallible>(handle(&admin, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .unwrap_or_default()
}

fn error(status: StatusCode, rule: &str, message: impl std::fmt::Display) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"error": rule, "message": message.to_string()});
    reply(status, "application/json", body.to_string())
}

async fn handle(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let app = &admin.app;
    if req.uri().path().starts_with("/v1/") {
        return push_api(admin, req).await;
    }
    if req.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            app.metrics.encode(),
        ),
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => match app.current.load() {
            // Ready while any policy can serve; those that cannot now are listed
            // (one policy's engine must not take the pod out of service for every
            // other policy), as are documents left out.
            Some(active) => reply(
                StatusCode::OK,
                "application/json",
                serde_json::json!({
                    "ready": true,
                    "configVersion": active.config.version,
                    "notAccepted": *app.current.not_accepted(),
                    "notReady": active.not_ready().into_iter()
                        .map(|(policy, reason)| serde_json::json!({"policy": policy, "reason": reason}))
                        .collect::<Vec<_>>(),
                })
                .to_string(),
            ),
            None => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                serde_json::json!({"ready": false, "reason": if admin.source.managed {
                    "no configuration yet: no last known good config or snapshot could be loaded; waiting for the operator to push one"
                } else {
                    "no configuration loaded yet"
                }})
                .to_string(),
            ),
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// The push API's token: the file's content, trimmed; an error when unreadable or empty.
pub fn read_token(file: &std::path::Path) -> Result<String, String> {
    let t = std::fs::read_to_string(file)
        .map_err(|e| format!("reading --admin-token-file {}: {e}", file.display()))?;
    let t = t.trim();
    if t.is_empty() {
        return Err(format!("--admin-token-file {} is empty", file.display()));
    }
    Ok(t.to_string())
}

async fn push_api(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(token_file) = &admin.token_file else {
        return error(
            StatusCode::FORBIDDEN,
            "push_disabled",
            "this proxy takes no pushed configuration: start it with --admin-token-file",
        );
    };
    let expected = match read_token(token_file) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "the admin token is unavailable");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "token_unavailable",
                "the proxy cannot read its admin token",
            );
        }
    };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(given) = given else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the push API needs Authorization: Bearer <admin token>",
        );
    };
    if !crate::auth::same_secret(given.as_bytes(), expected.as_bytes()) {
        tracing::warn!("push API request with a wrong token");
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong admin token",
        );
    }
    let app = &admin.app;
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/v1/config/version") => reply(
            StatusCode::OK,
            "application/json",
            serde_json::json!({"version": app.current.version()}).to_string(),
        ),
        (&Method::PUT, "/v1/config") => {
            if admin.source.policies.is_some() {
                return error(
                    StatusCode::CONFLICT,
                    "not_managed",
                    "this proxy reads its policies from --policies; pushes would be overwritten",
                );
            }
            let body = http_body_util::Limited::new(req.into_body(), MAX_CONFIG_BYTES);
            let bytes = match http_body_util::BodyExt::collect(body).await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "config_too_large",
                        format!("reading the config: {e} (limit {MAX_CONFIG_BYTES} bytes)"),
                    );
                }
            };
            let pushed =
                crate::runtime::parse_config(&bytes).and_then(|cfg| admin.source.push(app, cfg));
            match pushed {
                Ok(version) => reply(
                    StatusCode::OK,
                    "application/json",
                    serde_json::json!({"version": version}).to_string(),
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "pushed config refused; keeping the current one");
                    error(StatusCode::BAD_REQUEST, "invalid_config", e)
                }
            }
        }
        (_, "/v1/config" | "/v1/config/version") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "PUT /v1/config, GET /v1/config/version",
        ),
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint"),
    }
}
