//! How many verifications may talk to registries at once, and how many may keep much of what
//! they answered.
//!
//! The kubelet can ask for as many distinct images as it likes, naming as many registries as it
//! likes, and whoever controls an image name controls its registry. Two bounds:
//!
//! - **Per registry** (`registry.checks_per_registry`): a check waits for its registry's slot
//!   before it sends anything, so a registry that stalls every request holds at most this many
//!   checks, and the queue behind it holds nothing else.
//! - **Total** (`registry.checks_total`), on memory rather than on requests. A check that waits
//!   for an answer costs a socket and a task; an answer costs up to a manifest's 4 MiB. So a
//!   check takes a total slot only once the bodies it keeps pass [`SMALL_CHECK_BYTES`] (the
//!   registry client reports every byte before keeping it, see `registry::buffering`), and holds
//!   it until it ends.
//!
//! Why not take the total slot up front: then registries that never answer, 4 checks
//! each, fill all 16 total slots with checks that hold no memory, and every other registry's
//! pulls wait out their whole budget. Reserving part of the total for registries with nothing
//! in flight does not help either, since an attacker names one more registry per reserved slot.
//! Here a registry that never answers, or answers with a head and then stalls, or trickles a
//! small body, holds no total slot however many registries do it, and a check of ordinary size
//! (a manifest, a signature manifest, a payload, a token: a few KiB) never waits for one.
//!
//! What is left: registries that do send more than `SMALL_CHECK_BYTES` per check and then stall
//! can hold the total slots for up to one budget, delaying other large checks (never small
//! ones). That is the memory bound doing its job; it cannot be had without either waiting or
//! cancelling checks that are still making progress. Checks without a total slot each keep at
//! most `SMALL_CHECK_BYTES` (in buffers of up to twice that), of the order of what the HTTP
//! client may buffer for any open connection anyway; their number is bounded per registry and
//! by the pulls the kubelet has in flight.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::future::BoxFuture;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::registry::buffering::Buffering;

/// What a check may keep of registry answers without a total slot: far above an ordinary
/// check (image manifest, signature manifest, payloads and a token add up to a few KiB; an
/// index of many platforms or a few dozen signatures stays within this), so ordinary checks
/// never queue behind large ones, and small enough that thousands of checks without a total
/// slot stay within a few hundred MiB.
pub const SMALL_CHECK_BYTES: usize = 64 * 1024;

/// No slot came free before the check's deadline.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Busy {
    #[error("{limit} verifications against {registry} were already in progress (registry.checks_per_registry)")]
    Registry { registry: String, limit: usize },
    #[error("{limit} verifications were already holding large registry answers (registry.checks_total)")]
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

/// Held while a check runs: its registry's slot from the start, a total slot from when what it
/// keeps passes `SMALL_CHECK_BYTES`. Dropping it frees both.
pub struct Slot {
    _registry: RegistrySlot,
    total: Arc<Semaphore>,
    total_limit: usize,
    /// Body bytes reserved so far (saturating).
    kept: AtomicUsize,
    held: OnceCell<OwnedSemaphorePermit>,
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

    /// Waits until `deadline` at most for the registry's slot for a check against `registry`;
    /// the total slot, if the check needs one, is taken later through its `Buffering`.
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
        Ok(Slot {
            _registry: registry_slot,
            total: Arc::clone(&self.total),
            total_limit: self.total_limit,
            kept: AtomicUsize::new(0),
            held: OnceCell::new(),
        })
    }

    #[cfg(test)]
    fn registries_listed(&self) -> usize {
        lock(&self.registries).len()
    }

    #[cfg(test)]
    fn total_free(&self) -> usize {
        self.total.available_permits()
    }
}

// === impl Slot ===

impl Slot {
    /// The bound the check is stuck on, when it is waiting for a total slot.
    pub fn waiting_for(&self) -> Option<Busy> {
        let waiting = self.kept.load(Ordering::Relaxed) > SMALL_CHECK_BYTES && !self.held.initialized();
        waiting.then_some(Busy::Total { limit: self.total_limit })
    }

    async fn reserve_bytes(&self, bytes: usize) {
        let before =
            self.kept.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |kept| Some(kept.saturating_add(bytes)));
        let kept = before.unwrap_or_else(|kept| kept).saturating_add(bytes);
        if kept <= SMALL_CHECK_BYTES {
            return;
        }
        // Concurrent reads of one check (its signature payloads) share the one permit.
        self.held
            .get_or_init(|| async {
                match Arc::clone(&self.total).acquire_owned().await {
                    Ok(permit) => permit,
                    // Only a closed semaphore fails, and this one is never closed; should it
                    // be, the check waits out its deadline rather than go unbounded.
                    Err(_) => std::future::pending().await,
                }
            })
            .await;
    }
}

impl Buffering for Slot {
    fn reserve(&self, bytes: usize) -> BoxFuture<'_, ()> {
        Box::pin(self.reserve_bytes(bytes))
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

    /// Reserves `bytes` for `slot`, giving up after a second.
    async fn keeps(slot: &Slot, bytes: usize) -> bool {
        tokio::time::timeout(Duration::from_secs(1), slot.reserve(bytes)).await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_takes_a_total_slot_only_once_it_keeps_much() {
        let slots = slots(4, 1);
        let large = slots.acquire("large.example", soon()).await.unwrap();
        assert!(keeps(&large, SMALL_CHECK_BYTES).await);
        assert_eq!(slots.total_free(), 1, "a small check took a total slot");
        assert!(keeps(&large, 1).await);
        assert_eq!(slots.total_free(), 0);
        let other = slots.acquire("other.example", soon()).await.unwrap();
        assert!(keeps(&other, SMALL_CHECK_BYTES).await, "a small check waited behind a large one");
        assert_eq!(other.waiting_for(), None);
        let started = Instant::now();
        assert!(!keeps(&other, 1).await, "more large checks than the total");
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(other.waiting_for(), Some(Busy::Total { limit: 1 }));
        drop(large);
        assert!(keeps(&other, 0).await);
        assert_eq!((other.waiting_for(), slots.total_free()), (None, 0));
        drop(other);
        assert_eq!(slots.total_free(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_reads_of_one_check_share_its_total_slot() {
        let slots = slots(4, 3);
        let slot = slots.acquire("r", soon()).await.unwrap();
        let reads = (0..5).map(|_| slot.reserve(SMALL_CHECK_BYTES));
        futures_util::future::join_all(reads).await;
        assert_eq!(slots.total_free(), 2);
        assert!(keeps(&slot, usize::MAX).await, "a saturated count must not wrap");
        assert_eq!(slots.total_free(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_total_bounds_large_checks_across_registries() {
        let slots = slots(5, 3);
        let mut held = Vec::new();
        for registry in ["a", "b", "c"] {
            let slot = slots.acquire(registry, soon()).await.unwrap();
            assert!(keeps(&slot, SMALL_CHECK_BYTES + 1).await);
            held.push(slot);
        }
        let fourth = slots.acquire("d", soon()).await.unwrap();
        assert!(!keeps(&fourth, SMALL_CHECK_BYTES + 1).await);
        held.pop();
        assert!(keeps(&fourth, 0).await);
    }

    /// Issue 17: 16 registries that never answer, 6 pulls each, and the default bounds.
    #[tokio::test(start_paused = true)]
    async fn registries_that_never_answer_leave_the_total_to_the_others() {
        let slots = Arc::new(slots(4, 16));
        let forever = Instant::now() + Duration::from_secs(3600);
        let (started_checks, mut running) = tokio::sync::mpsc::unbounded_channel();
        let mut stalled = Vec::new();
        for registry in 0..16 {
            for _ in 0..6 {
                let (slots, started_checks) = (Arc::clone(&slots), started_checks.clone());
                stalled.push(tokio::spawn(async move {
                    let Ok(_slot) = slots.acquire(&format!("stalled-{registry}.example"), forever).await else {
                        return;
                    };
                    let _ = started_checks.send(());
                    drop(started_checks);
                    std::future::pending::<()>().await;
                }));
            }
        }
        drop(started_checks);
        for _ in 0..16 * 4 {
            running.recv().await.expect("a stalled registry's check did not start");
        }
        assert!(running.try_recv().is_err(), "more than 4 checks per registry started");
        let started = Instant::now();
        let healthy = slots.acquire("healthy.example", soon()).await.unwrap();
        assert!(keeps(&healthy, SMALL_CHECK_BYTES + 1).await);
        assert_eq!(started.elapsed(), Duration::ZERO, "the healthy check waited");
        stalled.iter().for_each(tokio::task::JoinHandle::abort);
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
