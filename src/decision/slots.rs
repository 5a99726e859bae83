//! How many verifications may talk to registries at once.
//!
//! Each check holds up to a manifest's worth of memory (4 MiB) and a registry connection, and
//! the kubelet can ask for as many distinct images as it likes, so checks wait for a slot. There
//! are two bounds: one per registry, so a registry that stalls every request can hold only its
//! own slots while pulls from every other registry go on, and one in total, which bounds memory
//! however many registries the images name. A check waits for its registry's slot before it
//! queues for a total one, so checks stuck behind a stalled registry hold no total slots.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// No slot came free before the check's deadline.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Busy {
    #[error("{limit} verifications against {registry} were already in progress (registry.checks_per_registry)")]
    Registry { registry: String, limit: usize },
    #[error("{limit} verifications were already in progress (registry.checks_total)")]
    Total { limit: usize },
}

pub struct Slots {
    per_registry: usize,
    total_limit: usize,
    total: Arc<Semaphore>,
    /// Only registries with a check running or waiting have an entry, so names the kubelet
    /// made up do not accumulate.
    registries: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

/// Held while a check runs; dropping it frees both slots.
pub struct Slot {
    _total: OwnedSemaphorePermit,
    _registry: RegistrySlot,
}

/// A registry's slot once `holds`, a place in its queue before. The permit is given back by
/// hand so that nothing but these guards (one per waiter or holder) shares the semaphore.
struct RegistrySlot {
    /// Always `Some` until dropped.
    semaphore: Option<Arc<Semaphore>>,
    holds: bool,
    name: String,
    registries: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the map consistent, so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl Slots ===

impl Slots {
    pub fn new(per_registry: NonZeroUsize, total: NonZeroUsize) -> Slots {
        Slots {
            per_registry: per_registry.get(),
            total_limit: total.get(),
            total: Arc::new(Semaphore::new(total.get())),
            registries: Arc::default(),
        }
    }

    /// Waits until `deadline` at most for a slot for a check against `registry`.
    pub async fn acquire(&self, registry: &str, deadline: Instant) -> Result<Slot, Busy> {
        let semaphore = Arc::clone(
            lock(&self.registries)
                .entry(registry.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_registry))),
        );
        // Made before the first await: if this future is dropped while it waits, the guard
        // still takes the registry's entry away once nobody else uses it.
        let mut registry_slot = RegistrySlot {
            semaphore: Some(semaphore),
            holds: false,
            name: registry.to_owned(),
            registries: Arc::clone(&self.registries),
        };
        let busy_registry = || Busy::Registry { registry: registry.to_owned(), limit: self.per_registry };
        let semaphore = registry_slot.semaphore.as_deref().ok_or_else(busy_registry)?;
        // `acquire` fails only on a closed semaphore, and these are never closed.
        let permit = tokio::time::timeout_at(deadline, semaphore.acquire()).await;
        permit.map_err(|_| busy_registry())?.map_err(|_| busy_registry())?.forget();
        registry_slot.holds = true;
        let busy_total = || Busy::Total { limit: self.total_limit };
        let total = tokio::time::timeout_at(deadline, Arc::clone(&self.total).acquire_owned()).await;
        let total = total.map_err(|_| busy_total())?.map_err(|_| busy_total())?;
        Ok(Slot { _total: total, _registry: registry_slot })
    }

    #[cfg(test)]
    fn registries_listed(&self) -> usize {
        lock(&self.registries).len()
    }
}

impl Drop for RegistrySlot {
    fn drop(&mut self) {
        let mut registries = lock(&self.registries);
        // Every other waiter or holder owns a clone of the semaphore too, and each lets go of
        // its own under this lock, so the last one out sees only the map's.
        let semaphore = self.semaphore.take();
        if let Some(semaphore) = semaphore.as_deref().filter(|_| self.holds) {
            semaphore.add_permits(1);
        }
        drop(semaphore);
        if registries.get(&self.name).is_some_and(|semaphore| Arc::strong_count(semaphore) == 1) {
            registries.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn slots(per_registry: usize, total: usize) -> Slots {
        Slots::new(NonZeroUsize::new(per_registry).unwrap(), NonZeroUsize::new(total).unwrap())
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(1)
    }

    #[tokio::test(start_paused = true)]
    async fn a_registry_gets_at_most_its_share_and_others_go_on() {
        let slots = slots(2, 10);
        let held = [slots.acquire("slow.example", soon()).await, slots.acquire("slow.example", soon()).await];
        assert!(held.iter().all(Result::is_ok));
        let started = Instant::now();
        let third = slots.acquire("slow.example", soon()).await;
        assert_eq!(third.err(), Some(Busy::Registry { registry: "slow.example".into(), limit: 2 }));
        assert_eq!(started.elapsed(), Duration::from_secs(1), "gave up before the deadline");
        assert!(slots.acquire("fast.example", soon()).await.is_ok(), "another registry waited");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_check_gets_the_slot_another_frees() {
        let slots = Arc::new(slots(1, 10));
        let held = slots.acquire("r", soon()).await.unwrap();
        let waiter = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move { slots.acquire("r", Instant::now() + Duration::from_secs(5)).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!waiter.is_finished());
        drop(held);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn the_total_bounds_checks_across_registries() {
        let slots = slots(5, 3);
        let mut held = Vec::new();
        for registry in ["a", "b", "c"] {
            held.push(slots.acquire(registry, soon()).await.unwrap());
        }
        assert_eq!(slots.acquire("d", soon()).await.err(), Some(Busy::Total { limit: 3 }));
        held.pop();
        assert!(slots.acquire("d", soon()).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn checks_waiting_on_their_registry_hold_no_total_slot() {
        let slots = Arc::new(slots(1, 2));
        let _stalled = slots.acquire("stalled", soon()).await.unwrap();
        let waiters: Vec<_> = (0..5)
            .map(|_| {
                let slots = Arc::clone(&slots);
                tokio::spawn(
                    async move { slots.acquire("stalled", Instant::now() + Duration::from_secs(60)).await.is_ok() },
                )
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(slots.acquire("healthy", soon()).await.is_ok(), "the queue behind one registry blocked another");
        waiters.iter().for_each(tokio::task::JoinHandle::abort);
    }

    #[tokio::test(start_paused = true)]
    async fn registries_are_forgotten_when_idle_even_after_a_timeout_or_a_dropped_wait() {
        let slots = slots(1, 10);
        let held = slots.acquire("one", soon()).await.unwrap();
        assert!(slots.acquire("one", soon()).await.is_err());
        // A waiter whose pull went away mid-wait.
        let abandoned = tokio::time::timeout(Duration::from_millis(10), slots.acquire("one", soon())).await;
        assert!(abandoned.is_err());
        assert_eq!(slots.registries_listed(), 1);
        drop(held);
        assert_eq!(slots.registries_listed(), 0);
        for n in 0..100 {
            drop(slots.acquire(&format!("made-up-{n}.example"), soon()).await.unwrap());
        }
        assert_eq!(slots.registries_listed(), 0);
    }
}
