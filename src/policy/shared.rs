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
    pub fn new(mut policy: Policy) -> SharedPolicy {
        policy.generation = 0;
        SharedPolicy { current: Arc::new(RwLock::new(Arc::new(policy))) }
    }

    pub fn current(&self) -> Arc<Policy> {
        // The lock only guards an Arc swap, which cannot leave it half-written.
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Puts `policy` in force with the next generation number, so nothing derived from the
    /// policy it replaces (cached verdicts) applies to it.
    pub fn replace(&self, mut policy: Policy) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        policy.generation = current.generation.wrapping_add(1);
        *current = Arc::new(policy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_replacement_gets_the_next_generation() {
        let shared = SharedPolicy::new(Policy::default());
        let before = shared.current();
        assert_eq!(before.generation(), 0);
        shared.replace(Policy::default());
        shared.replace(Policy::default());
        assert_eq!(shared.current().generation(), 2);
        // A snapshot taken earlier keeps the generation it was read under.
        assert_eq!(before.generation(), 0);
    }
}
