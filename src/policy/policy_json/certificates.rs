//! `sigstoreSigned` requirements that trust certificates rather than keys: `fulcio`, with the
//! Rekor keys containers/image requires beside it, and `pki`. Read with containers/image's
//! rules (signature/policy_config_sigstore.go): exactly one of the key forms, `fulcio` and
//! `pki`; at most one Rekor key form; `fulcio` needs one, `pki` and key requirements take none
//! here (see below); `fulcio` needs `caPath` or `caData`, `oidcIssuer` and `subjectEmail`; `pki`
//! needs `caRootsPath` or `caRootsData` and `subjectEmail` or `subjectHostname`.
//!
//! What containers/image checks for `fulcio` (fulcio_cert.go, rekor_set.go): the Rekor SET
//! against one of the Rekor keys, binding this certificate, signature and payload; the
//! certificate chain to a certificate of `caPath` (every one of which is a root) at the SET's
//! integrated time, with the code-signing EKU; the OIDC issuer extension equal to `oidcIssuer`;
//! `subjectEmail` among the certificate's email SANs. Not the SCT. pullgate's keyless verifier
//! makes the same checks (see docs/policy.md for where it is stricter), against a trusted root
//! built here from the files: the CA certificates and the Rekor keys, no CT log, SCT not
//! required.
//!
//! What containers/image checks for `pki` (pki_cert.go): the certificate chain, with the
//! policy's intermediates and the chain annotation (but its last certificate) as
//! intermediates, to a certificate of `caRoots…` at the current time, with the code-signing EKU
//! where an EKU is given; `subjectEmail` among its email SANs; the certificate valid for
//! `subjectHostname`. No log and no timestamp. `verify::keyless::pki` makes the same checks.
//!
//! Refused, because pullgate would check something other than what the author asked for:
//! Rekor keys beside public keys: containers/image then requires a Rekor SET for the key
//! signature; pullgate's key signatures carry no log check.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::value::RawValue;
use sigstore_verify::types::{DerCertificate, DerPublicKey};

use super::super::input;
use super::super::limits::{MAX_CA_FILE, MAX_KEY_FILE};
use super::super::load;
use super::super::{CertificateTrust, Pattern, RootSource, SignerIdentity};
use super::JsonCtx;
use crate::verify::keyless::pki::{PKI_ISSUER, PkiTrust};
use crate::verify::keyless::root;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFulcio {
    ca_path: Option<String>,
    ca_data: Option<String>,
    oidc_issuer: Option<String>,
    subject_email: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPki {
    ca_roots_path: Option<String>,
    ca_roots_data: Option<String>,
    ca_intermediates_path: Option<String>,
    ca_intermediates_data: Option<String>,
    subject_email: Option<String>,
    subject_hostname: Option<String>,
}

/// The Rekor key fields of a `sigstoreSigned` requirement, as given.
#[derive(Default)]
pub(super) struct RekorKeys {
    pub path: Option<String>,
    pub paths: Option<Vec<String>>,
    pub data: Option<String>,
    pub datas: Option<Vec<String>>,
}

impl RekorKeys {
    fn sources(&self) -> usize {
        [self.path.is_some(), self.paths.is_some(), self.data.is_some(), self.datas.is_some()]
            .iter()
            .filter(|given| **given)
            .count()
    }
}

/// serde's derived structs also take a JSON array of their fields in order; containers/image
/// takes only objects.
fn is_object(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('{')
}

/// The label a built root's authorities carry in `policy check`.
const FULCIO_LABEL: &str = "policy.json fulcio";
const PKI_LABEL: &str = "policy.json pki";

impl JsonCtx<'_> {
    /// Containers/image's rules on which sources a requirement combines; `keys` is how many
    /// key forms (keyPath, keyPaths, keyData, keyDatas) it gives. False when refused.
    pub(super) fn check_sources(
        &mut self,
        line: Option<usize>,
        keys: usize,
        fulcio: bool,
        pki: bool,
        rekor: &RekorKeys,
    ) -> bool {
        let refusal = if keys + usize::from(fulcio) + usize::from(pki) != 1 {
            "sigstoreSigned: exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio and pki must be given"
        } else if rekor.sources() > 1 {
            "sigstoreSigned: give at most one of rekorPublicKeyPath, rekorPublicKeyPaths, rekorPublicKeyData, rekorPublicKeyDatas"
        } else if fulcio && rekor.sources() == 0 {
            "sigstoreSigned: fulcio needs one of rekorPublicKeyPath, rekorPublicKeyPaths, rekorPublicKeyData, rekorPublicKeyDatas (containers/image requires a Rekor SET for Fulcio certificates)"
        } else if pki && rekor.sources() > 0 {
            "sigstoreSigned: Rekor keys cannot be used with pki (containers-policy.json(5) does not allow them)"
        } else if keys == 1 && rekor.sources() > 0 {
            "sigstoreSigned: Rekor keys beside public keys are not supported (containers/image then requires a Rekor SET on the key signature; pullgate does not check one for key signatures)"
        } else {
            return true;
        };
        self.problem(line, refusal);
        false
    }

    /// A `fulcio` object and its Rekor keys, as the one signer they trust (group 0); None when
    /// refused (already reported).
    pub(super) fn fulcio(&mut self, raw: &RawValue, rekor: &RekorKeys, line: Option<usize>) -> Option<SignerIdentity> {
        if !is_object(raw) {
            self.problem(line, "fulcio: must be a JSON object");
            return None;
        }
        let fulcio: RawFulcio = match serde_json::from_str(raw.get()) {
            Ok(fulcio) => fulcio,
            Err(e) => {
                self.json_problem(Some(raw), "fulcio: ", &e);
                return None;
            }
        };
        let before = self.loader.problem_count();
        let issuer = self.signer_pattern(line, "oidcIssuer", fulcio.oidc_issuer.as_deref());
        let subject = self.signer_pattern(line, "subjectEmail", fulcio.subject_email.as_deref());
        let cas = self.one_pem_source(line, "fulcio", ("caPath", &fulcio.ca_path), ("caData", &fulcio.ca_data));
        let cas = cas.and_then(|pem| self.certificates(line, "fulcio CA", &pem));
        let keys = self.rekor_keys(rekor, line);
        if self.loader.problem_count() != before {
            return None;
        }
        let (cas, keys, issuer, subject) = (cas?, keys?, issuer?, subject?);
        let root = match root::from_parts(FULCIO_LABEL, &cas, &keys) {
            Ok(root) => root,
            Err(e) => {
                self.problem(line, format!("fulcio: {e}"));
                return None;
            }
        };
        let files = fulcio.ca_path.iter().chain(rekor.path.iter()).chain(rekor.paths.iter().flatten());
        let files = files.map(|path| load::resolve(self.path, path)).collect();
        let source = RootSource::PolicyJson { policy_json: self.path.to_owned(), files };
        // containers/image does not check the SCT (fulcio_cert.go says why), and this root
        // has no CT log to check one against.
        let trust = CertificateTrust { root: Arc::new(root), source, sct: false, pki: None };
        Some(SignerIdentity { issuer, subject, trust: Arc::new(trust), group: 0 })
    }

    /// `fulcio`'s issuer or email, matched exactly, as containers/image does.
    fn signer_pattern(&mut self, line: Option<usize>, field: &str, value: Option<&str>) -> Option<Pattern> {
        let pattern = match value {
            None | Some("") => Err("is required".to_owned()),
            Some(value) => Pattern::exact(value),
        };
        pattern.map_err(|e| self.problem(line, format!("fulcio: {field} {e}"))).ok()
    }

    /// A `pki` object, read and checked as containers/image does, as the one signer it trusts
    /// (group 0); None when refused (already reported).
    pub(super) fn pki(&mut self, raw: &RawValue, line: Option<usize>) -> Option<SignerIdentity> {
        if !is_object(raw) {
            self.problem(line, "pki: must be a JSON object");
            return None;
        }
        let pki: RawPki = match serde_json::from_str(raw.get()) {
            Ok(pki) => pki,
            Err(e) => {
                self.json_problem(Some(raw), "pki: ", &e);
                return None;
            }
        };
        let before = self.loader.problem_count();
        let roots =
            self.one_pem_source(line, "pki", ("caRootsPath", &pki.ca_roots_path), ("caRootsData", &pki.ca_roots_data));
        let roots = roots.and_then(|pem| self.certificates(line, "pki CA root", &pem));
        let given = [&pki.ca_intermediates_path, &pki.ca_intermediates_data];
        let intermediates = if given.iter().any(|g| g.is_some()) {
            let pem = self.one_pem_source(
                line,
                "pki",
                ("caIntermediatesPath", &pki.ca_intermediates_path),
                ("caIntermediatesData", &pki.ca_intermediates_data),
            );
            pem.and_then(|pem| self.certificates(line, "pki CA intermediate", &pem))
        } else {
            Some(Vec::new())
        };
        let (email, hostname) = (pki.subject_email.as_deref(), pki.subject_hostname.as_deref());
        if [email, hostname].iter().all(|s| s.is_none_or(str::is_empty)) {
            self.problem(line, "pki: subjectEmail or subjectHostname is required");
        }
        if self.loader.problem_count() != before {
            return None;
        }
        let (roots, intermediates) = (roots?, intermediates?);
        let built = PkiTrust::new(&roots, &intermediates, email, hostname)
            .and_then(|trust| Ok((trust, root::from_parts(PKI_LABEL, &roots, &[]).map_err(|e| e.to_string())?)));
        let (trust, listing) = match built {
            Ok(built) => built,
            Err(e) => {
                self.problem(line, format!("pki: {e}"));
                return None;
            }
        };
        let files = [&pki.ca_roots_path, &pki.ca_intermediates_path].into_iter().flatten();
        let files = files.map(|path| load::resolve(self.path, path)).collect();
        let source = RootSource::PolicyJson { policy_json: self.path.to_owned(), files };
        // What the certificate must name is the trust's to check (an email among its SANs, a
        // hostname with wildcards): the patterns only show it, and match what it reports.
        let subject =
            Pattern::exact(&trust.subject_label()).map_err(|e| self.problem(line, format!("pki: {e}"))).ok()?;
        let issuer = Pattern::exact(PKI_ISSUER).ok()?;
        let trust = CertificateTrust { root: Arc::new(listing), source, sct: false, pki: Some(trust) };
        Some(SignerIdentity { issuer, subject, trust: Arc::new(trust), group: 0 })
    }

    /// The PEM text of exactly one of `path` (relative to the policy.json) and `data` (base64
    /// of the PEM file, as containers-policy.json's `…Data` fields are).
    fn one_pem_source(
        &mut self,
        line: Option<usize>,
        object: &str,
        (path_name, path): (&str, &Option<String>),
        (data_name, data): (&str, &Option<String>),
    ) -> Option<Vec<u8>> {
        let read = match (path, data) {
            (Some(_), Some(_)) => Err(format!("{object}: {path_name} and {data_name} cannot be used together")),
            (None, None) => Err(format!("{object}: one of {path_name} and {data_name} is required")),
            (Some(path), None) => {
                let path = load::resolve(self.path, path);
                input::read_bounded(&path, MAX_CA_FILE, "CA file")
                    .map_err(|e| format!("{object}: {path_name} {}: {e}", path.display()))
            }
            (None, Some(data)) => BASE64.decode(data.trim()).map_err(|e| {
                format!("{object}: {data_name} is not valid base64 ({e}); it takes the PEM file base64-encoded")
            }),
        };
        read.map_err(|e| self.problem(line, e)).ok()
    }

    fn certificates(&mut self, line: Option<usize>, what: &str, pem: &[u8]) -> Option<Vec<DerCertificate>> {
        root::certificates_from_pem(pem).map_err(|e| self.problem(line, format!("{what}: {e}"))).ok()
    }

    /// The Rekor public keys (PEM), from files relative to the policy.json or base64 data.
    fn rekor_keys(&mut self, rekor: &RekorKeys, line: Option<usize>) -> Option<Vec<DerPublicKey>> {
        let mut pems: Vec<(String, Result<Vec<u8>, String>)> = Vec::new();
        for path in rekor.path.iter().chain(rekor.paths.iter().flatten()) {
            let path = load::resolve(self.path, path);
            let read = input::read_bounded(&path, MAX_KEY_FILE, "key file");
            pems.push((format!("Rekor public key {}", path.display()), read));
        }
        for (i, data) in rekor.data.iter().chain(rekor.datas.iter().flatten()).enumerate() {
            let decoded = BASE64.decode(data.trim()).map_err(|e| format!("not valid base64 ({e})"));
            pems.push((format!("Rekor public key data #{}", i + 1), decoded));
        }
        if pems.is_empty() {
            self.problem(line, "sigstoreSigned: the Rekor key list is empty");
            return None;
        }
        let mut keys = Vec::new();
        for (what, pem) in pems {
            let key = pem.and_then(|pem| {
                let text = String::from_utf8(pem).map_err(|_| "is not PEM text".to_owned())?;
                DerPublicKey::from_pem(&text).map_err(|e| format!("is not a PEM public key ({e})"))
            });
            match key {
                Ok(key) => keys.push(key),
                Err(e) => self.problem(line, format!("{what}: {e}")),
            }
        }
        Some(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::test_support::{KEY_A, KEY_B, KEY_ED, TestDir, public_good_fulcio_pem};
    use super::super::super::{Policy, PolicyError};
    use super::*;

    fn fulcio_pem() -> String {
        public_good_fulcio_pem()
    }

    fn b64(text: &str) -> String {
        BASE64.encode(text)
    }

    /// A dir with certs/fulcio.pem, keys/{a,b,ed}.pub and policy.json requiring `requirement`
    /// for r.io.
    fn load(requirement: &str) -> (TestDir, Result<Policy, PolicyError>) {
        let dir = TestDir::new();
        dir.write("certs/fulcio.pem", &fulcio_pem());
        dir.write("keys/a.pub", KEY_A);
        dir.write("keys/b.pub", KEY_B);
        dir.write("keys/ed.pub", KEY_ED);
        dir.write("policy.d/README", "");
        let json = format!(
            "{{\n\"default\": [{{\"type\": \"reject\"}}],\n\"transports\": {{\"docker\": {{\n  \"r.io\": [{requirement}]\n}}}}}}\n"
        );
        dir.write("policy.json", &json);
        let loaded = Policy::load(&dir.path("policy.d"), Some(&dir.path("policy.json")));
        (dir, loaded)
    }

    fn refusal(requirement: &str) -> String {
        match load(requirement).1 {
            Ok(_) => panic!("loaded: {requirement}"),
            Err(err) => {
                assert!(err.problems.iter().all(|p| p.line == Some(4)), "{err}");
                err.to_string()
            }
        }
    }

    const FULCIO: &str = r#""fulcio": {"caPath": "certs/fulcio.pem", "oidcIssuer": "https://accounts.example.com", "subjectEmail": "dev@example.com"}"#;
    const REKOR: &str = r#""rekorPublicKeyPath": "keys/a.pub""#;

    #[test]
    fn a_fulcio_requirement_becomes_a_keyless_signer_of_its_own_root() {
        let requirement = format!(
            r#"{{"type": "sigstoreSigned", {FULCIO}, {REKOR}, "signedIdentity": {{"type": "matchRepository"}}}},
               {{"type": "sigstoreSigned", "keyPath": "keys/b.pub", "signedIdentity": {{"type": "matchRepository"}}}}"#
        );
        let (dir, loaded) = load(&requirement);
        let policy = loaded.unwrap();
        let rule = &policy.rules()[1];
        // Both requirements must hold: the signer is group 0, the key group 1.
        assert_eq!((rule.threshold, rule.identities.len(), rule.keys.len()), (2, 1, 1));
        assert_eq!((rule.identities[0].group, rule.keys[0].group), (0, 1));
        let signer = &rule.identities[0];
        assert!(signer.matches("dev@example.com", "https://accounts.example.com"));
        assert!(!signer.matches("dev@example.com", "https://accounts.example.com/"), "issuer matched exactly");
        assert!(!signer.matches("Dev@example.com", "https://accounts.example.com"), "email matched exactly");
        assert!(!signer.trust.sct, "containers/image does not check SCTs");
        // Relative paths are the policy.json's directory's, and are watched for changes.
        let files = vec![dir.path("certs/fulcio.pem"), dir.path("keys/a.pub")];
        let source = RootSource::PolicyJson { policy_json: dir.path("policy.json"), files };
        assert_eq!(signer.trust.source, source);
        let kinds: Vec<root::AuthorityKind> = signer.trust.root.authorities().iter().map(|a| a.kind).collect();
        use root::AuthorityKind::{CertificateAuthority as Ca, TransparencyLog as Log};
        assert_eq!(kinds, [Ca, Ca, Log], "one anchor per CA certificate, one log per Rekor key, no CT log");
    }

    #[test]
    fn a_pki_requirement_becomes_a_signer_checked_at_the_current_time() {
        let pki = crate::verify::keyless::pki::tests::make_pki();
        let (roots, intermediates) = (pki.path("root.pem"), pki.path("intermediate.pem"));
        let requirement = format!(
            r#"{{"type": "sigstoreSigned", "pki": {{"caRootsPath": "{}", "caIntermediatesPath": "{}", "subjectEmail": "dev@example.com", "subjectHostname": "ci.build.example.com"}}, "signedIdentity": {{"type": "matchRepository"}}}}"#,
            roots.display(),
            intermediates.display()
        );
        let (dir, loaded) = load(&requirement);
        let policy = loaded.unwrap();
        let rule = &policy.rules()[1];
        assert_eq!((rule.threshold, rule.identities.len(), rule.keys.len()), (1, 1, 0));
        let signer = &rule.identities[0];
        assert!(signer.trust.pki.is_some() && !signer.trust.sct);
        assert_eq!(
            signer.label(),
            format!("subject \"email dev@example.com and hostname ci.build.example.com\" from issuer \"{PKI_ISSUER}\"")
        );
        let source = RootSource::PolicyJson { policy_json: dir.path("policy.json"), files: vec![roots, intermediates] };
        assert_eq!(signer.trust.source, source, "the CA files are watched");
        assert_eq!(signer.trust.root_label(), format!("the pki CA roots of {}", dir.path("policy.json").display()));
        let kinds: Vec<root::AuthorityKind> = signer.trust.root.authorities().iter().map(|a| a.kind).collect();
        assert_eq!(kinds, [root::AuthorityKind::CertificateAuthority], "policy check lists the root");
        // A hostname that is no name is found at load.
        let bad = requirement.replace("ci.build.example.com", "not a host!");
        assert!(refusal(&bad).contains("pki: subjectHostname \"not a host!\" is not a DNS name or IP address"));
    }

    /// What containers/image refuses as a policy error (or fails every pull over), refused at
    /// load here too; and what it accepts but pullgate cannot check as it does (Rekor keys
    /// beside public keys).
    #[test]
    fn combinations_containers_image_refuses_are_refused() {
        let pki = r#""pki": {"caRootsPath": "certs/fulcio.pem", "subjectEmail": "dev@example.com"}"#;
        let cases: Vec<(String, &str)> = vec![
            (FULCIO.to_owned(), "fulcio needs one of rekorPublicKeyPath"),
            (
                format!("{FULCIO}, \"keyPath\": \"keys/a.pub\", {REKOR}"),
                "exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio and pki",
            ),
            (format!("{FULCIO}, {pki}"), "exactly one of"),
            (String::new(), "exactly one of"),
            (REKOR.to_owned(), "exactly one of"),
            (
                format!("{FULCIO}, {REKOR}, \"rekorPublicKeyData\": \"{}\"", b64(KEY_B)),
                "at most one of rekorPublicKeyPath",
            ),
            (format!("{pki}, {REKOR}"), "Rekor keys cannot be used with pki"),
            (format!("\"keyPath\": \"keys/b.pub\", {REKOR}"), "Rekor keys beside public keys are not supported"),
            (format!("\"fulcio\": null, {REKOR}"), "fulcio: must be a JSON object"),
            ("\"pki\": []".to_owned(), "pki: must be a JSON object"),
            (format!("{FULCIO}, \"rekorPublicKeyPaths\": []"), "the Rekor key list is empty"),
        ];
        for (fields, needle) in cases {
            let requirement = format!(
                "{{\"type\": \"sigstoreSigned\", \"signedIdentity\": {{\"type\": \"matchRepository\"}}{}{fields}}}",
                if fields.is_empty() { "" } else { ", " }
            );
            let text = refusal(&requirement);
            assert!(text.contains(needle), "{requirement}\n{text}");
        }
    }

    #[test]
    fn fulcio_and_pki_objects_are_checked_as_containers_image_checks_them() {
        let fulcio = |fields: &str| format!(r#"{{"type": "sigstoreSigned", "fulcio": {{{fields}}}, {REKOR}}}"#);
        let pki = |fields: &str| format!(r#"{{"type": "sigstoreSigned", "pki": {{{fields}}}}}"#);
        let issuer = r#""oidcIssuer": "https://i.example""#;
        let email = r#""subjectEmail": "dev@example.com""#;
        let ca_path = r#""caPath": "certs/fulcio.pem""#;
        let roots = r#""caRootsPath": "certs/fulcio.pem""#;
        let cases = [
            (pki(&format!("{roots}, \"subjectEmail\": \"\"")), "pki: subjectEmail or subjectHostname is required"),
            (fulcio(&format!("{issuer}, {email}")), "fulcio: one of caPath and caData is required"),
            (
                fulcio(&format!("{ca_path}, \"caData\": \"{}\", {issuer}, {email}", b64(&fulcio_pem()))),
                "caPath and caData cannot be used together",
            ),
            (fulcio(&format!("{ca_path}, {email}")), "fulcio: oidcIssuer is required"),
            (fulcio(&format!("{ca_path}, {issuer}, \"subjectEmail\": \"\"")), "fulcio: subjectEmail is required"),
            (
                fulcio(&format!("{ca_path}, {issuer}, {email}, \"subjectHostname\": \"h\"")),
                "unknown key \"subjectHostname\"",
            ),
            (pki(roots), "pki: subjectEmail or subjectHostname is required"),
            (pki(email), "pki: one of caRootsPath and caRootsData is required"),
            (
                pki(&format!("{roots}, \"caRootsData\": \"\", {email}")),
                "caRootsPath and caRootsData cannot be used together",
            ),
            (
                pki(&format!("{roots}, \"caIntermediatesPath\": \"a\", \"caIntermediatesData\": \"\", {email}")),
                "caIntermediatesPath and caIntermediatesData cannot be used together",
            ),
            (pki(&format!("{roots}, {email}, \"oidcIssuer\": \"x\"")), "unknown key \"oidcIssuer\""),
        ];
        for (requirement, needle) in cases {
            let text = refusal(&requirement);
            assert!(text.contains(needle), "{requirement}\n{text}");
        }
    }

    /// CA data that is not a certificate, odd CA and Rekor key files: each named at load.
    #[test]
    fn hostile_ca_and_rekor_key_material_is_refused_naming_it() {
        let with_ca = |ca: &str| {
            format!(
                r#"{{"type": "sigstoreSigned", "fulcio": {{{ca}, "oidcIssuer": "https://i", "subjectEmail": "a@b"}}, {REKOR}}}"#
            )
        };
        let with_rekor = |rekor: &str| format!(r#"{{"type": "sigstoreSigned", {FULCIO}, {rekor}}}"#);
        let not_a_cert = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
        let cases = [
            (with_ca(&format!("\"caData\": \"{}\"", b64("hello"))), "fulcio CA: holds no PEM certificate".to_owned()),
            (
                with_ca(&format!("\"caData\": \"{}\"", b64(KEY_A))),
                "fulcio CA: PEM block #1 is a \"PUBLIC KEY\", not a CERTIFICATE".to_owned(),
            ),
            (
                with_ca(&format!("\"caData\": \"{}\"", b64(not_a_cert))),
                "fulcio CA: PEM block #1 is not a usable certificate".to_owned(),
            ),
            (
                with_ca(&format!("\"caData\": \"{}\"", b64(&(fulcio_pem() + not_a_cert)))),
                "PEM block #3 is not a usable certificate".to_owned(),
            ),
            (with_ca("\"caData\": \"%%%\""), "fulcio: caData is not valid base64".to_owned()),
            (with_ca("\"caPath\": \"certs/missing.pem\""), "certs/missing.pem: cannot open".to_owned()),
            (
                with_ca("\"caPath\": \"/dev/zero\""),
                "caPath /dev/zero: is a character device, not a regular file".to_owned(),
            ),
            (
                with_rekor("\"rekorPublicKeyPath\": \"keys/ed.pub\""),
                "fulcio: trusted root unusable: Rekor public key #1 is not an ECDSA P-256 or P-384 key".to_owned(),
            ),
            (
                with_rekor(&format!("\"rekorPublicKeyDatas\": [\"{}\", \"{}\"]", b64(KEY_A), b64("junk"))),
                "Rekor public key data #2: is not a PEM public key".to_owned(),
            ),
            (
                with_rekor("\"rekorPublicKeyPaths\": [\"keys/a.pub\", \"certs/fulcio.pem\"]"),
                "certs/fulcio.pem: is not a PEM public key".to_owned(),
            ),
        ];
        for (requirement, needle) in cases {
            let text = refusal(&requirement);
            assert!(text.contains(&needle), "{requirement}\n{text}");
        }
    }

    #[test]
    fn a_fifo_or_huge_ca_file_is_refused_without_hanging() {
        let (dir, _) = load(r#"{"type": "reject"}"#);
        let fifo = dir.path("certs/fifo.pem");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        dir.write("certs/huge.pem", &"A".repeat(MAX_CA_FILE as usize + 1));
        let requirement = |path: &str| {
            format!(
                r#"[{{"type": "sigstoreSigned", "fulcio": {{"caPath": "{path}", "oidcIssuer": "https://i", "subjectEmail": "a@b"}}, {REKOR}}}]"#
            )
        };
        let json = format!(
            "{{\"default\": [{{\"type\": \"reject\"}}], \"transports\": {{\"docker\": {{\"r.io/a\": {}, \"r.io/b\": {}}}}}}}",
            requirement("certs/fifo.pem"),
            requirement("certs/huge.pem")
        );
        dir.write("policy.json", &json);
        let (done, result) = std::sync::mpsc::channel();
        let (policy_dir, policy_json) = (dir.path("policy.d"), dir.path("policy.json"));
        std::thread::spawn(move || done.send(Policy::load(&policy_dir, Some(&policy_json))));
        let err = result.recv_timeout(std::time::Duration::from_secs(5)).expect("load finished").unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 2, "{text}");
        assert!(text.contains("fifo.pem: is a FIFO (named pipe), not a regular file"), "{text}");
        assert!(text.contains("huge.pem: is larger than 1 MiB, the limit for a CA file"), "{text}");
    }
}
