//! What a trusted root holds and until when, for the operator: `pullgate policy check` lists
//! the roots in force with each authority's validity window, and warns before one stops
//! working. Everything here reads sigstore-trust-root's parsed `TrustedRoot`; certificate
//! dates come from sigstore-crypto's certificate parser, never from X.509 code of our own.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jiff::{SignedDuration, Timestamp};
use sha2::{Digest as _, Sha256};
use sigstore_verify::crypto::{KeyAlgorithm, parse_certificate_info};
use sigstore_verify::trust_root::TrustedRoot;
use sigstore_verify::trust_root::trusted_root::CertChain;
use sigstore_verify::types::{DerCertificate, DerPublicKey, TimeRange};

use super::{KeylessError, TrustRoot};

/// How far ahead `policy check` warns that an authority in force stops being valid: a month is
/// the usual notice for a scheduled key rotation, and long enough to roll a new root out to
/// air-gapped nodes.
pub const EXPIRY_WARNING: SignedDuration = SignedDuration::from_hours(30 * 24);

/// Where the built-in Sigstore public-good root comes from: the `trusted_root.json` embedded in
/// this version of sigstore-trust-root (a test checks Cargo.lock agrees). Refreshing the root
/// means updating that crate; docs/keyless.md says how.
pub const BUILT_IN_ROOT_SOURCE: &str = "sigstore-trust-root 0.15.1";

/// Which part of a sigstore deployment an entry trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthorityKind {
    /// Fulcio-like: issues signing certificates.
    CertificateAuthority,
    /// Rekor-like: signs log entries and checkpoints.
    TransparencyLog,
    /// Signs the SCTs embedded in signing certificates.
    CtLog,
    /// RFC 3161 timestamp authority.
    TimestampAuthority,
}

impl AuthorityKind {
    fn label(self) -> &'static str {
        match self {
            AuthorityKind::CertificateAuthority => "certificate authority",
            AuthorityKind::TransparencyLog => "transparency log",
            AuthorityKind::CtLog => "CT log",
            AuthorityKind::TimestampAuthority => "timestamp authority",
        }
    }
}

/// One authority of a root and when it may be relied on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Authority {
    pub kind: AuthorityKind,
    /// Its URI or base URL, else its subject's common name or organisation.
    pub name: String,
    /// The root's `validFor` window; None when the root gives none (always valid).
    pub valid_from: Option<Timestamp>,
    pub valid_until: Option<Timestamp>,
    /// For a CA or TSA: the earliest notAfter of its certificate chain, since a chain stops
    /// verifying when any of its certificates expires; None for keys, or a certificate whose
    /// dates cannot be read.
    pub certificates_until: Option<Timestamp>,
}

impl Authority {
    /// Within its `validFor` window at `now` (inclusive at both ends, as the window is).
    fn in_window(&self, now: Timestamp) -> bool {
        self.valid_from.is_none_or(|from| from <= now) && self.valid_until.is_none_or(|until| now <= until)
    }

    /// In its window and, for a CA, with no certificate of its chain expired.
    fn usable_at(&self, now: Timestamp) -> bool {
        self.in_window(now) && self.certificates_until.is_none_or(|until| now <= until)
    }

    /// When it stops being usable: the earlier of its window's end and its chain's notAfter.
    fn ends(&self) -> Option<Timestamp> {
        match (self.valid_until, self.certificates_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn describe(&self) -> String {
        let date = |t: Option<Timestamp>| t.map_or_else(|| "-".to_owned(), |t| t.strftime("%Y-%m-%d").to_string());
        let mut line = format!(
            "{}: {}, valid {} to {}",
            self.kind.label(),
            self.name,
            date(self.valid_from),
            date(self.valid_until)
        );
        if let Some(until) = self.certificates_until {
            line.push_str(&format!(", certificates until {}", date(Some(until))));
        }
        line
    }
}

/// Every authority of a trusted root, in the root's order (CAs, logs, CT logs, TSAs).
pub fn authorities(root: &TrustedRoot) -> Vec<Authority> {
    let key = |kind, url: &str, window: Option<TimeRange>| Authority {
        kind,
        name: url.to_owned(),
        valid_from: window.map(|w| w.start),
        valid_until: window.and_then(|w| w.end),
        certificates_until: None,
    };
    let chained = |kind, name: String, chain: &CertChain, window: Option<TimeRange>| Authority {
        certificates_until: chain_not_after(chain),
        ..key(kind, &name, window)
    };
    let ca_name = |uri: &str, cn: &Option<String>, org: &Option<String>| {
        [Some(uri.to_owned()).filter(|u| !u.is_empty()), cn.clone(), org.clone()].into_iter().flatten().next()
    };
    let cas = root.certificate_authorities.iter().map(|ca| {
        let name = ca_name(&ca.uri, &ca.subject.common_name, &ca.subject.organization);
        chained(AuthorityKind::CertificateAuthority, name.unwrap_or_default(), &ca.cert_chain, ca.valid_for)
    });
    let tlogs = root.tlogs.iter().map(|l| key(AuthorityKind::TransparencyLog, &l.base_url, l.public_key.valid_for));
    let ctlogs = root.ctlogs.iter().map(|l| key(AuthorityKind::CtLog, &l.base_url, l.public_key.valid_for));
    let tsas = root.timestamp_authorities.iter().map(|tsa| {
        let name = ca_name(tsa.uri.as_deref().unwrap_or(""), &tsa.subject.common_name, &tsa.subject.organization);
        chained(AuthorityKind::TimestampAuthority, name.unwrap_or_default(), &tsa.cert_chain, tsa.valid_for)
    });
    cas.chain(tlogs).chain(ctlogs).chain(tsas).collect()
}

fn chain_not_after(chain: &CertChain) -> Option<Timestamp> {
    let dates: Option<Vec<Timestamp>> = chain
        .certificates
        .iter()
        .map(|cert| parse_certificate_info(&cert.raw_bytes).ok().map(|info| info.not_after))
        .collect();
    dates?.into_iter().min()
}

/// The newest `validFor` start among a root's authorities: the best date a `TrustedRoot`
/// (which carries no date of its own) gives for how recent it is.
pub fn newest_start(authorities: &[Authority]) -> Option<Timestamp> {
    authorities.iter().filter_map(|a| a.valid_from).max()
}

/// What an operator should act on at `now`: an authority in force that stops within
/// [`EXPIRY_WARNING`], one whose window is open but whose certificates have expired, and a
/// root with no certificate authority usable now (new certificates cannot verify against it).
pub fn warnings(authorities: &[Authority], now: Timestamp) -> Vec<String> {
    let mut warnings = Vec::new();
    for authority in authorities.iter().filter(|a| a.in_window(now)) {
        let Some(ends) = authority.ends() else { continue };
        let left = now.duration_until(ends);
        let what = format!("{} {}", authority.kind.label(), authority.name);
        if left.is_negative() {
            warnings.push(format!("{what}: its certificate chain expired on {}", ends.strftime("%Y-%m-%d")));
        } else if left <= EXPIRY_WARNING {
            let days = left.as_secs() / 86_400;
            warnings.push(format!("{what}: stops being valid on {} (in {days} days)", ends.strftime("%Y-%m-%d")));
        }
    }
    let cas = authorities.iter().filter(|a| a.kind == AuthorityKind::CertificateAuthority);
    if !cas.clone().any(|ca| ca.usable_at(now)) {
        let message = match cas.filter_map(Authority::ends).max() {
            Some(last) => format!(
                "no certificate authority is valid now (the last one ended on {}): only certificates issued before then can verify",
                last.strftime("%Y-%m-%d")
            ),
            None => {
                "no certificate authority is valid now: no signing certificate can verify against this root".to_owned()
            }
        };
        warnings.push(message);
    }
    warnings
}

// === trust material from separate files ===

/// The media type of the `TrustedRoot` documents built here, as of the files operators write.
const TRUSTED_ROOT_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.trustedroot+json;version=0.1";

/// A trusted root made of separate files rather than a `TrustedRoot` document, as
/// containers-policy.json gives them (a `fulcio` CA file and Rekor public keys). Built as a
/// `TrustedRoot` so that the same verifier checks it: each CA certificate is a trust anchor of
/// its own whose `validFor` is the certificate's validity (Go's x509, which containers/image
/// uses, refuses a chain whose root has expired at the signing time; webpki does not look at a
/// trust anchor's dates, the window does it); each Rekor key is a log whose ID is the SHA-256 of
/// the key, as Rekor's log IDs are. No CT log and no timestamp authority.
pub fn from_parts(
    label: &str,
    ca_certificates: &[DerCertificate],
    rekor_keys: &[DerPublicKey],
) -> Result<TrustRoot, KeylessError> {
    let mut authorities = Vec::new();
    for (i, der) in ca_certificates.iter().enumerate() {
        let info = parse_certificate_info(der)
            .map_err(|e| KeylessError::TrustRoot(format!("CA certificate #{}: {e}", i + 1)))?;
        authorities.push(serde_json::json!({
            "subject": {"commonName": format!("{label} CA #{}", i + 1)},
            "uri": "",
            "certChain": {"certificates": [{"rawBytes": BASE64.encode(der.as_bytes())}]},
            "validFor": {"start": info.not_before.to_string(), "end": info.not_after.to_string()},
        }));
    }
    let mut tlogs = Vec::new();
    for (i, key) in rekor_keys.iter().enumerate() {
        let details = match KeyAlgorithm::from_spki(key) {
            Ok(KeyAlgorithm::EcdsaP256) => "PKIX_ECDSA_P256_SHA_256",
            Ok(KeyAlgorithm::EcdsaP384) => "PKIX_ECDSA_P384_SHA_384",
            // containers/image takes ECDSA Rekor keys only; sigstore-rust has no P-521.
            _ => {
                return Err(KeylessError::TrustRoot(format!(
                    "Rekor public key #{} is not an ECDSA P-256 or P-384 key",
                    i + 1
                )));
            }
        };
        tlogs.push(serde_json::json!({
            "baseUrl": format!("{label} Rekor key #{}", i + 1),
            "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": BASE64.encode(key.as_bytes()), "keyDetails": details},
            "logId": {"keyId": BASE64.encode(Sha256::digest(key.as_bytes()))},
        }));
    }
    let root = serde_json::json!({
        "mediaType": TRUSTED_ROOT_MEDIA_TYPE,
        "certificateAuthorities": authorities,
        "tlogs": tlogs,
    });
    TrustRoot::from_json(&root.to_string())
}

/// Every `CERTIFICATE` block of a PEM file. Stricter than Go's `AppendCertsFromPEM`, which
/// skips what it cannot parse: a CA file with anything else in it is refused, so a truncated
/// or mistaken file is found at load rather than trusting fewer CAs than its author thinks.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<DerCertificate>, String> {
    let blocks = pem::parse_many(pem).map_err(|e| format!("not PEM: {e}"))?;
    if blocks.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    blocks
        .into_iter()
        .enumerate()
        .map(|(i, block)| {
            if block.tag() != "CERTIFICATE" {
                return Err(format!("PEM block #{} is a {:?}, not a CERTIFICATE", i + 1, block.tag()));
            }
            let der = DerCertificate::new(block.into_contents());
            parse_certificate_info(&der)
                .map_err(|e| format!("PEM block #{} is not a usable certificate: {e}", i + 1))?;
            Ok(der)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigstore_verify::trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT;

    fn public_good() -> Vec<Authority> {
        authorities(&TrustedRoot::from_json(SIGSTORE_PRODUCTION_TRUSTED_ROOT).unwrap())
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn key(kind: AuthorityKind, from: &str, until: Option<&str>) -> Authority {
        Authority {
            kind,
            name: "https://log.example".to_owned(),
            valid_from: Some(at(from)),
            valid_until: until.map(at),
            certificates_until: None,
        }
    }

    #[test]
    fn the_public_good_root_is_listed_with_its_windows_and_certificate_dates() {
        let listed = public_good();
        let kinds = |kind| listed.iter().filter(|a| a.kind == kind).count();
        assert!(kinds(AuthorityKind::CertificateAuthority) >= 2, "{listed:?}");
        assert!(kinds(AuthorityKind::TransparencyLog) >= 1, "{listed:?}");
        assert!(kinds(AuthorityKind::CtLog) >= 1, "{listed:?}");
        assert!(kinds(AuthorityKind::TimestampAuthority) >= 1, "{listed:?}");
        let fulcio = listed.iter().find(|a| a.name == "https://fulcio.sigstore.dev" && a.valid_until.is_none());
        let fulcio = fulcio.expect("the current Fulcio CA, with an open window");
        // Its chain's certificates are dated, and the current intermediate outlives 2030.
        assert!(fulcio.certificates_until.is_some_and(|t| t > at("2030-01-01T00:00:00Z")), "{fulcio:?}");
        assert!(newest_start(&listed).is_some_and(|t| t >= at("2025-01-01T00:00:00Z")));
        // Valid now and for years: nothing to warn about.
        assert_eq!(warnings(&listed, at("2026-06-01T00:00:00Z")), Vec::<String>::new());
    }

    #[test]
    fn an_authority_ending_within_the_warning_period_is_named() {
        let ca = key(AuthorityKind::CertificateAuthority, "2020-01-01T00:00:00Z", None);
        let log = key(AuthorityKind::TransparencyLog, "2020-01-01T00:00:00Z", Some("2026-07-01T00:00:00Z"));
        let listed = [ca, log];
        // 31 days before: quiet; 30 days before: warned, with the date and the days left.
        assert!(warnings(&listed, at("2026-05-31T00:00:00Z")).is_empty());
        let found = warnings(&listed, at("2026-06-01T00:00:00Z"));
        assert_eq!(found, ["transparency log https://log.example: stops being valid on 2026-07-01 (in 30 days)"]);
        // Ended: no longer in force, so no longer warned about (it stays for old signatures).
        assert!(warnings(&listed, at("2026-07-02T00:00:00Z")).is_empty());
    }

    #[test]
    fn a_ca_whose_certificate_expires_soon_is_warned_about_even_with_an_open_window() {
        let mut ca = key(AuthorityKind::CertificateAuthority, "2020-01-01T00:00:00Z", None);
        ca.certificates_until = Some(at("2026-06-10T00:00:00Z"));
        let found = warnings(std::slice::from_ref(&ca), at("2026-06-01T00:00:00Z"));
        assert_eq!(found, ["certificate authority https://log.example: stops being valid on 2026-06-10 (in 9 days)"]);
        let found = warnings(&[ca], at("2026-06-11T00:00:00Z"));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].ends_with("its certificate chain expired on 2026-06-10"), "{found:?}");
        assert!(found[1].starts_with("no certificate authority is valid now (the last one ended on 2026-06-10)"));
    }

    #[test]
    fn an_expired_root_and_a_root_without_a_ca_are_warned_about() {
        let old = key(AuthorityKind::CertificateAuthority, "2020-01-01T00:00:00Z", Some("2021-01-01T00:00:00Z"));
        let log = key(AuthorityKind::TransparencyLog, "2020-01-01T00:00:00Z", None);
        let found = warnings(&[old, log.clone()], at("2026-06-01T00:00:00Z"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("the last one ended on 2021-01-01"), "{found:?}");
        let found = warnings(&[log], at("2026-06-01T00:00:00Z"));
        assert_eq!(
            found,
            ["no certificate authority is valid now: no signing certificate can verify against this root"]
        );
        // A CA whose window has not started yet is not valid now either.
        let future = key(AuthorityKind::CertificateAuthority, "2027-01-01T00:00:00Z", None);
        assert_eq!(warnings(&[future], at("2026-06-01T00:00:00Z")).len(), 1);
    }

    /// Rekor (v1, the log that issues SETs) uses the SHA-256 of its key as its log ID: true of
    /// the public-good one, and what the logs built from bare keys rely on to find the key a SET
    /// names. (Rekor v2 logs derive theirs from the checkpoint origin too; they issue no SETs.)
    #[test]
    fn logs_built_from_keys_have_rekor_log_ids_and_cas_their_certificates_dates() {
        let public_good = TrustedRoot::from_json(SIGSTORE_PRODUCTION_TRUSTED_ROOT).unwrap();
        let v1 = public_good.tlogs.iter().filter(|log| log.base_url == "https://rekor.sigstore.dev");
        assert_eq!(v1.clone().count(), 1);
        for log in v1 {
            let computed = BASE64.encode(Sha256::digest(log.public_key.raw_bytes.as_bytes()));
            assert_eq!(computed, log.log_id.key_id.to_string(), "{}", log.base_url);
        }
        let ca = public_good.certificate_authorities.iter().find(|ca| ca.valid_for.is_some_and(|w| w.end.is_none()));
        let certs: Vec<DerCertificate> =
            ca.unwrap().cert_chain.certificates.iter().map(|c| c.raw_bytes.clone()).collect();
        let keys: Vec<DerPublicKey> = public_good.tlogs.iter().map(|l| l.public_key.raw_bytes.clone()).collect();
        let built = from_parts("test", &certs, &keys[..1]).unwrap();
        let listed = built.authorities();
        assert_eq!(listed.len(), certs.len() + 1, "{listed:?}");
        for (authority, cert) in listed.iter().zip(&certs) {
            let info = parse_certificate_info(cert).unwrap();
            assert_eq!((authority.valid_from, authority.valid_until), (Some(info.not_before), Some(info.not_after)));
        }
        let ed25519 = DerPublicKey::from_pem(crate::policy::test_support::KEY_ED).unwrap();
        let refused = from_parts("test", &certs, &[ed25519]).err().unwrap().to_string();
        assert!(refused.contains("Rekor public key #1 is not an ECDSA P-256 or P-384 key"), "{refused}");
    }

    #[test]
    fn the_built_in_root_source_names_the_crate_version_in_use() {
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
        let version = lock.split("[[package]]").find_map(|package| {
            package.contains("name = \"sigstore-trust-root\"\n").then(|| {
                let line = package.lines().find(|l| l.starts_with("version = ")).unwrap();
                line.trim_start_matches("version = ").trim_matches('"').to_owned()
            })
        });
        assert_eq!(BUILT_IN_ROOT_SOURCE, format!("sigstore-trust-root {}", version.unwrap()));
    }
}
