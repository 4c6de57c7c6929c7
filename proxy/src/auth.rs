//! Credentials: API keys (stored as SHA-256 hashes) and JWTs (RS256, ES256, EdDSA).
//!
//! ```text
//!   X-Api-Key: k            -> sha256(k) compared with every stored hash
//!   Authorization: Bearer t -> a JWT when a jwt rule exists and t has two dots,
//!                              else an API key as above
//! ```
//! Hash comparisons run in constant time and never stop at the first match,
//! so timing tells nothing about which key or how much of it matched.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};
use sluice_policy::RouteAuth;
use subtle::ConstantTimeEq;

use crate::error::Reject;

/// A route's auth, prepared once per config load.
pub struct Authenticator {
    key_hashes: Vec<[u8; 32]>,
    jwt: Option<(DecodingKey, Validation)>,
    /// HMAC keys of signed URLs and forms (checked by `signed`, called from the gate).
    signing_keys: Vec<Vec<u8>>,
}

impl Authenticator {
    pub fn new(auth: &RouteAuth) -> Result<Self, String> {
        let key_hashes = auth
            .api_key_sha256
            .iter()
            .map(|h| {
                hex::decode(h)
                    .ok()
                    .and_then(|v| <[u8; 32]>::try_from(v).ok())
                    .ok_or_else(|| format!("api key hash {h:?} is not hex SHA-256"))
            })
            .collect::<Result<_, _>>()?;
        let jwt = match &auth.jwt {
            None => None,
            Some(rule) => {
                let pem = rule.public_key_pem.as_bytes();
                // The key's type decides the algorithm: a token cannot pick a weaker one.
                let (key, alg) = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
                    (k, Algorithm::RS256)
                } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
                    (k, Algorithm::ES256)
                } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
                    (k, Algorithm::EdDSA)
                } else {
                    return Err("jwt public key is not an RSA, EC P-256 or Ed25519 PEM key".into());
                };
                let mut v = Validation::new(alg);
                v.set_issuer(&[&rule.issuer]);
                if rule.audiences.is_empty() {
                    v.validate_aud = false;
                } else {
                    v.set_audience(&rule.audiences);
                }
                Some((key, v))
            }
        };
        let signing_keys = auth
            .signing_keys_hex
            .iter()
            .map(|h| hex::decode(h).map_err(|_| format!("signing key {h:?} is not hex")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            key_hashes,
            jwt,
            signing_keys,
        })
    }

    /// The keys signed URLs and forms may be signed with; empty: none accepted.
    pub fn signing_keys(&self) -> &[Vec<u8>] {
        &self.signing_keys
    }

    /// Whether API keys or JWTs are accepted besides signatures.
    pub fn takes_credentials(&self) -> bool {
        !self.key_hashes.is_empty() || self.jwt.is_some()
    }

    /// Ok when the request carries an accepted credential.
    pub fn check(
        &self,
        authorization: Option<&[u8]>,
        api_key: Option<&[u8]>,
    ) -> Result<(), Reject> {
        let bearer = authorization.and_then(|v| {
            let v = v.trim_ascii();
            (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| v[7..].trim_ascii())
        });
        if let Some(k) = api_key {
            return self.check_key(k.trim_ascii());
        }
        let Some(token) = bearer else {
            return Err(if authorization.is_some() {
                Reject::Forbidden("only Bearer credentials are accepted".into())
            } else {
                Reject::Unauthorized
            });
        };
        if let Some((key, validation)) = &self.jwt
            && token.iter().filter(|b| **b == b'.').count() == 2
        {
            return jsonwebtoken::decode::<serde_json::Value>(token, key, validation)
                .map(|_| ())
                .map_err(|e| Reject::Forbidden(format!("token rejected: {e}")));
        }
        self.check_key(token)
    }

    fn check_key(&self, key: &[u8]) -> Result<(), Reject> {
        let h = Sha256::digest(key);
        let mut ok = subtle::Choice::from(0u8);
        for stored in &self.key_hashes {
            ok |= stored.ct_eq(&h[..]);
        }
        if bool::from(ok) {
            Ok(())
        } else {
            Err(Reject::Forbidden("unknown API key".into()))
        }
    }
}

/// Whether two secrets are equal, in time that depends on neither's content:
/// both are hashed first, so lengths leak nothing either.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ks: &[&str]) -> Authenticator {
        Authenticator::new(&RouteAuth {
            api_key_sha256: ks.iter().map(|k| hex::encode(Sha256::digest(k))).collect(),
            jwt: None,
            signing_keys_hex: vec![],
        })
        .unwrap()
    }

    #[test]
    fn api_keys() {
        let a = keys(&["alpha", "beta"]);
        assert_eq!(a.check(None, None), Err(Reject::Unauthorized));
        assert!(a.check(None, Some(b"alpha")).is_ok());
        assert!(a.check(Some(b"Bearer beta"), None).is_ok());
        assert!(a.check(Some(b"bearer  beta "), None).is_ok());
        assert_eq!(
            a.check(None, Some(b"gamma")).unwrap_err().rule(),
            "forbidden"
        );
        assert_eq!(
            a.check(Some(b"Bearer alph"), None).unwrap_err().rule(),
            "forbidden"
        );
        assert_eq!(
            a.check(Some(b"Basic YTpi"), None).unwrap_err().rule(),
            "forbidden"
        );
    }

    #[test]
    fn bad_hash_refused_at_load() {
        assert!(
            Authenticator::new(&RouteAuth {
                api_key_sha256: vec!["zz".into()],
                jwt: None,
                signing_keys_hex: vec![]
            })
            .is_err()
        );
    }
}
