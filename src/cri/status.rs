//! The one place where pullgate's own errors become gRPC statuses for the kubelet.

use tonic::Status;

use crate::cri::pull::PullError;

pub fn pull_error(error: &PullError) -> Status {
    match error {
        PullError::Body(_) | PullError::Wire(_) | PullError::Decode(_) => {
            Status::invalid_argument(format!("pullgate: {error}"))
        }
        PullError::Rejected(rejection) => match *rejection {},
    }
}
