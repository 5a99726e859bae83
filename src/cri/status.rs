//! The one place where pullgate's own errors become gRPC statuses for the kubelet.

use tonic::Status;

use crate::cri::pull::PullError;
use crate::cri::store::StoreError;
use crate::decision::Rejection;

/// The kubelet turns a pull error starting with these into the pod's waiting reason
/// (`SignatureValidationFailed`) or treats it as a registry outage to retry (`RegistryUnavailable`).
const SIGNATURE_VALIDATION_FAILED: &str = "SignatureValidationFailed";
const REGISTRY_UNAVAILABLE: &str = "RegistryUnavailable";

pub fn pull_error(error: &PullError) -> Status {
    match error {
        PullError::Body(_) | PullError::Wire(_) | PullError::Decode(_) => {
            Status::invalid_argument(format!("pullgate: {error}"))
        }
        PullError::Rejected(rejection) => rejected(rejection),
        // What containerd stored is not what was verified: as much a failed verification as a
        // bad signature, so the kubelet shows the same reason.
        PullError::Store(StoreError::Mismatch(mismatch)) => {
            Status::unknown(format!("{SIGNATURE_VALIDATION_FAILED}: {mismatch}"))
        }
        PullError::Store(StoreError::Unreadable { .. }) => Status::unknown(format!("pullgate: {error}")),
        PullError::Tag(_) | PullError::Response(_) => Status::unknown(format!("pullgate: {error}")),
    }
}

/// UNKNOWN, as containerd itself reports pull failures, so the kubelet reads the message.
/// A missing image is NOT_FOUND with no prefix, as containerd reports it: the kubelet knows
/// only the two prefixes above and files anything else under `ErrImagePull` with the message
/// as is, which is what a pod pulling a mistyped tag shows without pullgate too.
/// Public so `pullgate verify` can show the exact status the kubelet would get.
pub fn rejected(rejection: &Rejection) -> Status {
    match rejection {
        Rejection::NotFound(message) => Status::not_found(format!("pullgate: {message}")),
        Rejection::Denied(message) => Status::unknown(format!("{SIGNATURE_VALIDATION_FAILED}: {message}")),
        Rejection::RegistryUnavailable(message) => Status::unknown(format!("{REGISTRY_UNAVAILABLE}: {message}")),
    }
}
