//! Bytes of requests pullgate holds for the calls it answers itself, counted across every
//! connection: a cap per connection alone would let many connections together hold far more.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Shared by every connection of one server.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget { used: AtomicUsize::new(0), limit })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// What all shares hold now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// One call's share of a `Budget`, given back when dropped.
#[derive(Debug)]
pub struct Held {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Held {
    pub fn new(budget: &Arc<Budget>) -> Held {
        Held { budget: budget.clone(), bytes: 0 }
    }

    /// Takes `bytes` more; false, taking nothing, when the budget has no room for them.
    pub fn take(&mut self, bytes: usize) -> bool {
        let taken = self.budget.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            used.checked_add(bytes).filter(|total| *total <= self.budget.limit)
        });
        if taken.is_ok() {
            self.bytes += bytes;
        }
        taken.is_ok()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_bounded_together_and_given_back_on_drop() {
        let budget = Budget::new(100);
        let (mut a, mut b) = (Held::new(&budget), Held::new(&budget));
        assert!(a.take(60));
        assert!(!b.take(41), "over the limit together");
        assert!(b.take(40));
        assert!(!a.take(1));
        drop(a);
        assert!(b.take(60));
        assert!(!b.take(1));
        drop(b);
        assert!(Held::new(&budget).take(100));
    }
}
