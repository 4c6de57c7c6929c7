//! The client side of the proxies' push API: `PUT /v1/config` with the
//! compiled ProxyConfig, `GET /v1/config/version`, bearer token auth.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use sluice_policy::ProxyConfig;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("the proxy refused the admin token (401)")]
    Unauthorized,
    #[error("the proxy refused the config ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the proxy answered {0}")]
    Unexpected(String),
    #[error("the proxy is unreachable: {0}")]
    Unreachable(String),
}

impl PushError {
    /// For the errors-by-kind metric and log lines.
    pub fn kind(&self) -> &'static str {
        match self {
            PushError::Unauthorized => "unauthorized",
            PushError::Refused { .. } => "refused",
            PushError::Unexpected(_) => "unexpected",
            PushError::Unreachable(_) => "unreachable",
        }
    }
}

/// One config, serialized once, pushed to many proxies.
#[derive(Clone, Debug)]
pub struct Payload {
    pub version: String,
    pub body: Bytes,
}

impl Payload {
    pub fn new(config: &ProxyConfig) -> Self {
        Payload {
            version: config.version.clone(),
            // Plain data: serializing cannot fail.
            body: serde_json::to_vec(config).unwrap_or_default().into(),
        }
    }
}

#[derive(Clone)]
pub struct Pusher {
    client: reqwest::Client,
    token: String,
}

impl Pusher {
    pub fn new(token: &str, timeout: Duration) -> Result<Self, PushError> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .timeout(timeout)
            .build()
            .map_err(|e| PushError::Unexpected(format!("building the HTTP client: {e}")))?;
        Ok(Pusher {
            client,
            token: token.trim().to_string(),
        })
    }

    /// Pushes `payload`; `Ok` carries the version the proxy now serves.
    pub async fn push(&self, admin: SocketAddr, payload: &Payload) -> Result<String, PushError> {
        let r = self
            .client
            .put(format!("http://{admin}/v1/config"))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(payload.body.clone())
            .send()
            .await
            .map_err(|e| PushError::Unreachable(e.to_string()))?;
        version_from(r)
            .await?
            .ok_or_else(|| PushError::Unexpected("a push answered without a version".into()))
    }

    /// The version a proxy serves (None before it has any).
    pub async fn served(&self, admin: SocketAddr) -> Result<Option<String>, PushError> {
        let r = self
            .client
            .get(format!("http://{admin}/v1/config/version"))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| PushError::Unreachable(e.to_string()))?;
        version_from(r).await
    }
}

async fn version_from(r: reqwest::Response) -> Result<Option<String>, PushError> {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
    match status {
        200 => Ok(body["version"].as_str().map(str::to_string)),
        401 => Err(PushError::Unauthorized),
        400..=499 => Err(PushError::Refused {
            status,
            message: body["message"].as_str().unwrap_or("").to_string(),
        }),
        _ => Err(PushError::Unexpected(format!("{status}: {body}"))),
    }
}
