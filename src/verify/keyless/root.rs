//! What a trusted root holds and until when, for the operator: `pullgate policy check` lists
//! the roots in force with each authority's validity window, and warns before one stops
//! working. Everything here reads sigstore-trust-root's parsed `TrustedRoot`; certificate
//! dates come from sigstore-crypto's certificate parser, never from X.509 code of our own.

use jiff::{SignedDuration, Timestamp};
use sigstore_verify::crypto::parse_certificate_info;
use sigstore_verify::trust_root::TrustedRoot;
use sigstore_verify::trust_root::trusted_root::CertChain;
use sigstore_verify::types::TimeRange;

/// How far ahead `policy check` warns that an authority in force stops being valid: a month is
/// the usual notice for a scheduled key rotation, and long enough to roll a new root out to
/// air-gapped nodes.
pub const EXPIRY_WARNING: SignedDuration = SignedDuration::from_hours(30 * 24);

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
}
