//! Per-part checks for uploads: pure functions over strings and bytes, no IO
//! and no async, so the proxy's streaming code stays thin and these rules
//! can be tested exhaustively on their own.
//!
//! A multipart part flows through them in this order: the client's filename
//! goes through [`sanitize_filename`] and the route's [`Allowlists`] (its
//! extension); its declared Content-Type through the same lists; the first
//! [`SNIFF_LEN`] bytes are buffered and [`sniff`]ed, and the part is kept
//! only if the sniffed type is allowed too (via [`sniffed_mime`]) and
//! [`declared_agrees`] with it. Object keys in download/upload paths go
//! through [`parse_key`].
//!
//! ```text
//!   filename     -> names::sanitize_filename -> allow: extension
//!   Content-Type ----------------------------> allow: type
//!   head bytes   -> types::sniff -> sniffed_mime -> allow: type
//!                               \-> declared_agrees(Content-Type)
//!   request path -> names::parse_key
//! ```
//! One file per concern: `names` (filenames, object keys), `types` (media
//! types, sniffing, declared-vs-sniffed agreement), `allow` (a route's
//! allowlists). Every public item is re-exported here, so callers write
//! `filters::NAME` whichever file it lives in.
//!
//! Trade-off: the rules lean towards refusing: an odd but honest upload may
//! be refused, a mislabelled or dangerous one should not get through.

mod allow;
mod names;
mod types;

pub use allow::Allowlists;
pub use names::{KeyError, MAX_FILENAME_BYTES, extension, parse_key, sanitize_filename};
pub(crate) use types::before_params;
pub use types::{SNIFF_LEN, Sniffed, declared_agrees, sniff, sniffed_mime};

#[cfg(test)]
mod tests {
    //! Helpers the tests of `names`, `types` and `allow` share.

    use super::*;

    pub(super) fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    pub(super) fn type_allowed(list: &[String], ct: &str) -> bool {
        Allowlists::new(list, &[]).type_allowed(ct)
    }

    pub(super) fn extension_allowed(list: &[String], name: &str) -> bool {
        Allowlists::new(&[], list).extension_allowed(name)
    }

    /// Small deterministic generator so the test needs no extra crates.
    pub(super) struct XorShift(pub(super) u64);

    impl XorShift {
        pub(super) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        pub(super) fn bytes(&mut self, len: usize, alphabet: &[u8]) -> Vec<u8> {
            (0..len)
                .map(|_| {
                    let r = self.next() as usize;
                    if alphabet.is_empty() {
                        r as u8
                    } else {
                        alphabet[r % alphabet.len()]
                    }
                })
                .collect()
        }
    }
}
