//! HTTP/1.1 on byte strings, with no sockets: what the fast path reads and
//! writes around the bytes it moves with splice(2) and sendfile(2).
//!
//! ```text
//!   head      request head bytes -> Parsed { Partial | Complete(len, fast request) | Other | TooLarge }
//!   response  status line, headers, Date, keep-alive -> a Vec<u8> to write whole
//!   chunked   size lines out; a chunked body's framing followed through relayed bytes
//!   replay    bytes already read, handed to hyper ahead of the socket
//! ```
//! Kept apart from the connection code (mini-redis's frame vs connection
//! split) so every decision here is a plain function of bytes: unit-tested on
//! byte strings and fuzzed (`proxy/fuzz`), while `server` only moves them.
//! Written by hand, over httparse, because the splice paths need the socket
//! itself once a head is read, which no HTTP library hands back.

pub mod chunked;
pub mod head;
pub mod replay;
pub mod response;

pub use head::{Parsed, Request, parse};

/// Most of a refused request's body that is read and dropped after the
/// answer, so that closing does not reset the connection before the client
/// has read that answer (nginx's lingering close).
pub const LINGER_BYTES: u64 = 4 << 20;
/// How long that reading may take.
pub const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(5);
