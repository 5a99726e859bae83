//! Bounds on what loading a policy reads. The files are the operator's, but a path can point
//! somewhere unexpected (a device, a FIFO, a log), and a load that hangs or fills memory would
//! keep the daemon from starting or from applying a revocation.

/// Far beyond any real policy (a thousand rules is a few hundred KiB), yet small enough that a
/// policy file or policy.json pointed at a log or a device is refused before it costs memory.
pub const MAX_POLICY_FILE: u64 = 4 * 1024 * 1024;

/// A key file holds one PEM public key; the PEM parser's own bound is the one that applies, so
/// reading more than it accepts would only waste memory.
pub const MAX_KEY_FILE: u64 = crate::verify::keys::MAX_PEM_BYTES as u64;

/// A keyless signer's subject or issuer, exact or regex: identities and issuer URLs are a few
/// hundred characters at most.
pub const MAX_SIGNER_PATTERN_CHARS: usize = 1024;
/// The compiled size of one signer regex. A few KiB for any real pattern; the bound keeps a
/// short pattern with nested repetition (`(\w{100}){100}`) from compiling into megabytes per
/// rule.
pub const MAX_SIGNER_REGEX_BYTES: usize = 256 * 1024;

/// A CA file of a containers-policy.json `fulcio` or `pki` requirement: a few PEM certificates,
/// a couple of KiB each; a whole system bundle is a few hundred KiB.
pub const MAX_CA_FILE: u64 = 1024 * 1024;
