//! The body of every response hyper sends, and its constructors: what both
//! hyper's answers and the download bodies are made of.

use std::convert::Infallible;
use std::io;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

use crate::error::Reject;

pub type Body = UnsyncBoxBody<Bytes, io::Error>;

pub fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

pub fn full(
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
) -> Response<Body> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(k, v);
    }
    b.body(
        Full::new(Bytes::from(body))
            .map_err(|e: Infallible| match e {})
            .boxed_unsync(),
    )
    .unwrap_or_else(|_| Response::new(empty()))
}

/// A refusal as hyper sends it: the same status, headers and JSON as the fast path's.
pub fn reject_response(r: &Reject) -> Response<Body> {
    let mut h = r.headers();
    h.push(("content-type", "application/json".into()));
    full(r.status(), h, r.body())
}
