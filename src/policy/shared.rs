//! The policy in force, shared between the pull path and whatever replaces it on reload.

use std::sync::{Arc, PoisonError, RwLock};

use super::Policy;

/// Readers take an `Arc` snapshot, so a pull keeps one consistent policy from lookup to
/// verdict even if a reload swaps it meanwhile.
#[derive(Clone, Default)]
pub struct SharedPolicy {
    current: Arc<RwLock<Arc<Policy>>>,
}

impl SharedPolicy {
    pub fn new(policy: Policy) -> SharedPolicy {
        SharedPolicy { current: Arc::new(RwLock::new(Arc::new(policy))) }
    }

    pub fn current(&self) -> Arc<Policy> {
        // The lock only guards an Arc swap, which cannot leave it half-written.
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn replace(&self, policy: Policy) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(policy);
    }
}
