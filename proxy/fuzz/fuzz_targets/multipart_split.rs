//! Differential target of the multipart scanner (`upload::multipart`): one
//! body fed whole, and fed in chunks cut at the fuzzer's points, must give
//! the same heads, the same bytes per part, the same part ends and End, and
//! the same error after the same events. After every chunk the scanner
//! keeps at most a bound set by `max_head` and the boundary's length.
//!
//! Input: byte 0 picks `max_head` (16 + 4 x b, small so HeadTooLarge is
//! reachable); byte 1 the number of cuts (0xff: one byte at a time); then
//! that many u16 (LE) cut points (mod body length + 1); then a line with the
//! Content-Type (`multipart/form-data; boundary=...`, or the boundary
//! itself); the rest is the body.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_proxy::upload::multipart::{Bad, Event, PartHead, Scanner, boundary};

/// What the scanner said, with adjacent data joined: cuts may split one
/// slice of data in several.
#[derive(Debug, PartialEq, Eq)]
enum Said {
    Head(PartHead),
    Data(Vec<u8>),
    PartEnd,
    End,
}

fn push(said: &mut Vec<Said>, events: Vec<Event>) {
    for e in events {
        match e {
            Event::Data(b) => match said.last_mut() {
                Some(Said::Data(d)) => d.extend_from_slice(&b),
                _ => said.push(Said::Data(b.to_vec())),
            },
            Event::Head(h) => said.push(Said::Head(h)),
            Event::PartEnd => said.push(Said::PartEnd),
            Event::End => said.push(Said::End),
        }
    }
}

/// The most a scanner may keep: a held-back tail under the delimiter's
/// length, a scratch of two such, the framing (a header block of max_head + 4
/// bytes, or transport padding of at most 256 bytes after a delimiter), each
/// buffer at most twice what it holds (growth by doubling).
fn bound(max_head: usize, boundary: &str) -> usize {
    let d = 4 + boundary.len();
    d + 2 * (2 * d) + 2 * (max_head + 4).max(256 + 2) + 64
}

struct Run {
    said: Vec<Said>,
    result: Result<(), Bad>,
    done: bool,
}

fn run(b: &str, max_head: usize, chunks: impl Iterator<Item = Bytes>) -> Run {
    let mut s = Scanner::new(b, max_head);
    let mut said = Vec::new();
    let mut result = Ok(());
    let limit = bound(max_head, b);
    for c in chunks {
        let mut events = Vec::new();
        result = s.feed(c, &mut events);
        push(&mut said, events);
        assert!(
            s.retained() <= limit,
            "scanner keeps {} bytes, over {limit}",
            s.retained()
        );
        if result.is_err() {
            break;
        }
    }
    Run {
        said,
        result,
        done: s.done(),
    }
}

fuzz_target!(|data: &[u8]| {
    let [sel, ncuts, rest @ ..] = data else {
        return;
    };
    let max_head = 16 + 4 * usize::from(*sel);
    let (ncuts, one_by_one) = match *ncuts {
        0xff => (0, true),
        n => (usize::from(n % 33), false),
    };
    let Some((cuts, rest)) = rest.split_at_checked(2 * ncuts) else {
        return;
    };
    let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
        return;
    };
    let Ok(line) = std::str::from_utf8(&rest[..nl]) else {
        return;
    };
    let line = line.strip_suffix('\r').unwrap_or(line);
    let b = match boundary(line) {
        Some(b) => b,
        // A bare boundary, within RFC 2046's 1 to 70 characters.
        None if (1..=70).contains(&line.len()) && !line.contains(['\r', '\n']) => line.to_string(),
        None => return,
    };
    let body = Bytes::copy_from_slice(&rest[nl + 1..]);

    let whole = run(&b, max_head, std::iter::once(body.clone()));

    let mut at: Vec<usize> = cuts
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (body.len() + 1))
        .collect();
    if one_by_one {
        at = (0..=body.len()).collect();
    }
    at.push(0);
    at.push(body.len());
    at.sort_unstable();
    let pieces = at.windows(2).map(|w| body.slice(w[0]..w[1]));
    let cut = run(&b, max_head, pieces);

    let cuts = &at[..at.len().min(40)];
    assert_eq!(whole.said, cut.said, "cuts at {cuts:?} change what is said");
    assert_eq!(
        whole.result, cut.result,
        "cuts at {cuts:?} change the outcome"
    );
    assert_eq!(whole.done, cut.done);
    if whole.done {
        assert!(
            matches!(whole.said.last(), Some(Said::End)),
            "done without End"
        );
    }
});
