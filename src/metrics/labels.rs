//! Label sets, kept small and bounded: a label value that clients can choose freely would let
//! them grow the metric set without limit.

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// CRI has about fifty methods; anything past this many distinct paths is not a CRI client.
const MAX_METHODS: usize = 128;
/// Longer than any gRPC method name in CRI or health.
const MAX_METHOD_LEN: usize = 128;
/// The label for paths not counted under their own name.
const OTHER: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DecisionLabels {
    pub verdict: &'static str,
    pub mode: &'static str,
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StatusLabels {
    pub status: HttpStatus,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CallLabels {
    pub method: Arc<str>,
    pub code: CallOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReloadLabels {
    pub result: &'static str,
}

/// An HTTP status, or `error` when the request got no response at all.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(super) struct HttpStatus(Option<u16>);

impl From<Option<u16>> for HttpStatus {
    fn from(status: Option<u16>) -> Self {
        HttpStatus(status)
    }
}

impl EncodeLabelValue for HttpStatus {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self.0 {
            Some(status) => write!(encoder, "{status}"),
            None => encoder.write_str("error"),
        }
    }
}

/// How a relayed call ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CallOutcome {
    /// The gRPC status the call ended with.
    Code(tonic::Code),
    /// The response ended without a grpc-status.
    Missing,
    /// The client went away before the status arrived.
    Aborted,
}

impl std::fmt::Display for CallOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The same spelling as the call log has always used ("Ok", "NotFound", …).
            CallOutcome::Code(code) => write!(f, "{code:?}"),
            CallOutcome::Missing => f.write_str("Missing"),
            CallOutcome::Aborted => f.write_str("Aborted"),
        }
    }
}

impl EncodeLabelValue for CallOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        write!(encoder, "{self}")
    }
}

/// A call's method as counted and as logged.
#[derive(Clone, Debug)]
pub struct Method {
    label: Arc<str>,
    /// The path as sent, kept only when it is not counted under its own name.
    uncounted: Option<Box<str>>,
}

impl Method {
    pub fn path(&self) -> &str {
        self.uncounted.as_deref().unwrap_or(&self.label)
    }

    pub(super) fn label(&self) -> Arc<str> {
        self.label.clone()
    }
}

/// Interned method names: after a method's first call, labelling it is a hash lookup and a
/// reference-count increment.
pub(super) struct Methods {
    known: RwLock<HashSet<Arc<str>>>,
    other: Arc<str>,
}

impl Default for Methods {
    fn default() -> Self {
        Methods { known: RwLock::default(), other: Arc::from(OTHER) }
    }
}

impl Methods {
    pub fn intern(&self, path: &str) -> Method {
        let known = self.known.read().unwrap_or_else(PoisonError::into_inner).get(path).cloned();
        if let Some(label) = known {
            return Method { label, uncounted: None };
        }
        if !is_method_path(path) {
            return self.uncounted(path);
        }
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(label) = known.get(path) {
            return Method { label: label.clone(), uncounted: None };
        }
        if known.len() >= MAX_METHODS {
            drop(known);
            return self.uncounted(path);
        }
        let label: Arc<str> = Arc::from(path);
        known.insert(label.clone());
        Method { label, uncounted: None }
    }

    fn uncounted(&self, path: &str) -> Method {
        Method { label: self.other.clone(), uncounted: Some(path.into()) }
    }
}

/// `/package.Service/Method`, as gRPC clients send it.
fn is_method_path(path: &str) -> bool {
    let Some((service, method)) = path.strip_prefix('/').and_then(|rest| rest.split_once('/')) else {
        return false;
    };
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
    path.len() <= MAX_METHOD_LEN && word(service) && word(method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_paths() {
        assert!(is_method_path("/runtime.v1.ImageService/PullImage"));
        assert!(is_method_path("/grpc.health.v1.Health/Check"));
        for bad in ["", "/", "/a", "//b", "/a/", "/a/b/c", "/a b/c", "/a/\"x\"", "no/slash"] {
            assert!(!is_method_path(bad), "{bad:?}");
        }
        assert!(!is_method_path(&format!("/a/{}", "m".repeat(MAX_METHOD_LEN))));
    }

    #[test]
    fn interning_shares_one_name_and_caps_the_set() {
        let methods = Methods::default();
        let a = methods.intern("/s.S/A");
        let again = methods.intern("/s.S/A");
        assert!(Arc::ptr_eq(&a.label, &again.label));
        assert_eq!(again.path(), "/s.S/A");
        for i in 1..MAX_METHODS {
            methods.intern(&format!("/s.S/M{i}"));
        }
        let late = methods.intern("/s.S/Late");
        assert_eq!((&*late.label, late.path()), (OTHER, "/s.S/Late"));
        let odd = methods.intern("/not a method");
        assert_eq!((&*odd.label, odd.path()), (OTHER, "/not a method"));
    }
}
