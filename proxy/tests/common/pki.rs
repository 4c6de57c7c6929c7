//! Test certificates made on the fly (rcgen): a CA per test, leaf
//! certificates signed by it for names and addresses, expired or wrong-named
//! ones for the failure cases, written as PEM files the proxy and the engines
//! (nginx) read.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
}

/// A leaf certificate: `chain_pem` is the leaf then its CA (a full chain).
pub struct Leaf {
    pub cert_pem: String,
    pub chain_pem: String,
    pub key_pem: String,
}

impl Leaf {
    /// Writes `{stem}.crt` (full chain) and `{stem}.key` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let crt = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&crt, &self.chain_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (crt, key)
    }
}

fn sans(names: &[&str]) -> Vec<SanType> {
    names
        .iter()
        .map(|n| match n.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*n).try_into().unwrap()),
        })
        .collect()
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        p.not_after = OffsetDateTime::now_utc() + Duration::days(30);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A server and client certificate for `names` (DNS names or IP addresses), valid now.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_valid(
            names,
            OffsetDateTime::now_utc() - Duration::hours(1),
            OffsetDateTime::now_utc() + Duration::days(7),
        )
    }

    /// Expired yesterday.
    pub fn expired_leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_valid(
            names,
            OffsetDateTime::now_utc() - Duration::days(3),
            OffsetDateTime::now_utc() - Duration::days(1),
        )
    }

    pub fn leaf_valid(
        &self,
        names: &[&str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Leaf {
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        p.subject_alt_names = sans(names);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = not_before;
        p.not_after = not_after;
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes the CA certificate as `{stem}.crt` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> PathBuf {
        let crt = dir.join(format!("{stem}.crt"));
        std::fs::write(&crt, &self.cert_pem).unwrap();
        crt
    }
}
