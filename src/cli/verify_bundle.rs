//! `pullgate verify-bundle`: checks one sigstore bundle offline, following the
//! sigstore-conformance CLI protocol, so the suite can drive pullgate's keyless verification
//! and operators can check a bundle on an air-gapped node.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::verify::keyless::{self, KeylessError, MAX_BUNDLE_BYTES, PublicGood, Signer, Subject, TrustRoot, Verified};

use super::{EXIT_ERROR, EXIT_REFUSED};

#[derive(clap::Args)]
pub(super) struct VerifyBundleArgs {
    /// Use the Sigstore staging instance's root instead of production's (without --trusted-root).
    #[arg(long)]
    staging: bool,
    /// The sigstore bundle (JSON, v0.1 to v0.3).
    #[arg(long)]
    bundle: PathBuf,
    /// The identity the signing certificate must carry (SAN: email, URI or DNS name), exactly.
    #[arg(long, requires = "certificate_oidc_issuer", required_unless_present = "key")]
    certificate_identity: Option<String>,
    /// The OIDC issuer the signing certificate must name, exactly.
    #[arg(long, requires = "certificate_identity")]
    certificate_oidc_issuer: Option<String>,
    /// A PEM public key that must have made the signature, instead of a certificate identity.
    #[arg(long, conflicts_with_all = ["certificate_identity", "certificate_oidc_issuer"])]
    key: Option<PathBuf>,
    /// A sigstore trusted_root.json; by default the public-good root built into pullgate.
    #[arg(long)]
    trusted_root: Option<PathBuf>,
    /// The signed file, or its digest as `sha256:<64 hex digits>`.
    file_or_digest: String,
}

pub(super) fn run(args: &VerifyBundleArgs) -> ExitCode {
    match verify(args) {
        Ok(verified) => {
            println!("verified: {}", describe(&verified));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("pullgate: {error}");
            let refused = matches!(error, KeylessError::Refused(_) | KeylessError::Bundle(_));
            ExitCode::from(if refused { EXIT_REFUSED } else { EXIT_ERROR })
        }
    }
}

fn verify(args: &VerifyBundleArgs) -> Result<Verified, KeylessError> {
    let root = match &args.trusted_root {
        Some(path) => keyless::read_trust_root(path)?,
        None if args.staging => TrustRoot::public_good(PublicGood::Staging)?,
        None => TrustRoot::public_good(PublicGood::Production)?,
    };
    let signer = signer(args)?;
    let bundle = crate::policy::read_bounded_text(&args.bundle, MAX_BUNDLE_BYTES, "bundle")
        .map_err(|e| KeylessError::Input(format!("{}: {e}", args.bundle.display())))?;
    match digest(&args.file_or_digest) {
        Some(digest) => keyless::verify_bundle(&root, &bundle, Subject::Digest(digest), &signer),
        None => {
            let path = Path::new(&args.file_or_digest);
            let mut file = std::fs::File::open(path)
                .map_err(|e| KeylessError::Input(format!("{}: cannot open: {e}", path.display())))?;
            keyless::verify_bundle(&root, &bundle, Subject::Reader(&mut file), &signer)
        }
    }
}

fn signer(args: &VerifyBundleArgs) -> Result<Signer, KeylessError> {
    if let Some(path) = &args.key {
        let pem = crate::policy::read_bounded_text(path, crate::verify::keys::MAX_PEM_BYTES as u64, "key file")
            .map_err(|e| KeylessError::Input(format!("{}: {e}", path.display())))?;
        return Signer::key_from_pem(&pem);
    }
    match (&args.certificate_identity, &args.certificate_oidc_issuer) {
        (Some(subject), Some(issuer)) => Ok(Signer::Identity { subject: subject.clone(), issuer: issuer.clone() }),
        _ => Err(KeylessError::Input("give --certificate-identity and --certificate-oidc-issuer, or --key".into())),
    }
}

/// The protocol's rule: a digest is `sha256:` and 64 hex digits and not the name of a file;
/// anything else is a path.
fn digest(argument: &str) -> Option<sigstore_verify::types::Sha256Hash> {
    let hex = argument.strip_prefix("sha256:")?;
    if hex.len() != 64 || Path::new(argument).exists() {
        return None;
    }
    sigstore_verify::types::Sha256Hash::from_hex(hex).ok()
}

fn describe(verified: &Verified) -> String {
    let times = verified.signing_times.join(", ");
    match (&verified.identity, &verified.issuer) {
        (Some(identity), Some(issuer)) => {
            format!("identity {identity}, issuer {issuer}, signed at {times}")
        }
        _ => format!("signed by the given key at {times}"),
    }
}
