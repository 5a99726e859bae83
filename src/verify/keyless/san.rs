//! The certificate SAN a keyless signer is named by. sigstore-crypto reports the first email or
//! URI SAN (Fulcio's two kinds) and no other; a certificate from a private CA may name a host
//! instead (a DNS SAN), which is read here with x509-cert, the parser sigstore-crypto uses.

use sigstore_verify::crypto::SubjectAltName as ReportedSan;
use sigstore_verify::types::DerCertificate;
use x509_cert::Certificate;
use x509_cert::der::Decode as _;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

/// Whom `certificate` names: the SAN sigstore reported (`reported`, its first email or URI),
/// else its first DNS SAN. One name per certificate, so that a certificate is one signer.
pub fn identity(reported: Option<&ReportedSan>, certificate: &DerCertificate) -> Option<String> {
    match reported {
        Some(san) => Some(san.as_str().to_owned()),
        None => dns_name(certificate),
    }
}

/// The first DNS name of the SAN extension; None for a certificate that does not parse, has no
/// SAN extension or no DNS name in it.
fn dns_name(certificate: &DerCertificate) -> Option<String> {
    let certificate = Certificate::from_der(certificate.as_bytes()).ok()?;
    let (_critical, san) = certificate.tbs_certificate.get::<SubjectAltName>().ok()??;
    san.0.into_iter().find_map(|name| match name {
        GeneralName::DnsName(host) => Some(host.to_string()),
        _ => None,
    })
}
