//! Single flight: concurrent pulls of one image under one rule share one verification.
//!
//! The first caller for a key starts the work as a task of its own and later callers wait on
//! the same result. No caller drives the work, so one that goes away (the kubelet gave up on
//! its pull) neither cancels it for the others nor leaves them waiting on a future nobody
//! polls, and the result still reaches the cache for the kubelet's retry.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use futures_util::future::{BoxFuture, FutureExt, Shared};

/// The task running a flight ended without a result: it panicked, or the runtime is stopping.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("the verification task ended without a result")]
pub struct Lost;

/// What every caller of one flight awaits.
pub type Flight<V> = Shared<BoxFuture<'static, Result<V, Lost>>>;

pub struct Flights<K, V> {
    running: Arc<Mutex<Running<K, V>>>,
}

struct Running<K, V> {
    next_id: u64,
    flights: HashMap<K, (u64, Flight<V>)>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the map consistent, so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl Flights ===

impl<K, V> Flights<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new() -> Flights<K, V> {
        Flights { running: Arc::new(Mutex::new(Running { next_id: 0, flights: HashMap::new() })) }
    }

    /// Joins the flight for `key`, or starts `work()` as a new one when none is running.
    /// `work` is called under the flights' lock and must only build its future.
    pub fn join<F, Fut>(&self, key: K, work: F) -> Flight<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let mut running = lock(&self.running);
        if let Some((_, flight)) = running.flights.get(&key) {
            return flight.clone();
        }
        let id = running.next_id;
        running.next_id = id.wrapping_add(1);
        let landing = Landing { running: Arc::downgrade(&self.running), key: key.clone(), id };
        let work = work();
        let task = tokio::spawn(async move {
            let _landing = landing;
            work.await
        });
        let flight = task.map(|joined| joined.map_err(|_| Lost)).boxed().shared();
        running.flights.insert(key, (id, flight.clone()));
        flight
    }
}

impl<K, V> Default for Flights<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Flights::new()
    }
}

/// Takes its flight off the map when the task ends, whichever way it ends, so that a task
/// that panicked or was dropped cannot leave later callers joining a flight that never lands.
struct Landing<K: Eq + Hash, V> {
    running: Weak<Mutex<Running<K, V>>>,
    key: K,
    id: u64,
}

impl<K: Eq + Hash, V> Drop for Landing<K, V> {
    fn drop(&mut self) {
        let Some(running) = self.running.upgrade() else { return };
        let mut running = lock(&running);
        // Only this flight's own entry: the id tells it from a later flight for the same key.
        if running.flights.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            running.flights.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::Semaphore;

    /// Closed until `open`; then everyone passes (each waiter returns the one permit on drop).
    fn gate() -> Arc<Semaphore> {
        Arc::new(Semaphore::new(0))
    }

    fn open(gate: &Semaphore) {
        gate.add_permits(1);
    }

    /// Work that counts its starts and returns `value` once the gate opens.
    fn gated(
        starts: &Arc<AtomicUsize>,
        gate: &Arc<Semaphore>,
        value: u32,
    ) -> impl Future<Output = u32> + Send + 'static {
        starts.fetch_add(1, Ordering::SeqCst);
        let gate = Arc::clone(gate);
        async move {
            let _pass = gate.acquire().await;
            value
        }
    }

    async fn explode(gate: Arc<Semaphore>) -> u32 {
        let _pass = gate.acquire().await;
        panic!("a bug in the verification")
    }

    fn in_flight(flights: &Flights<&'static str, u32>) -> usize {
        lock(&flights.running).flights.len()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_callers_share_one_run() {
        let flights = Flights::new();
        let (starts, gate) = (Arc::new(AtomicUsize::new(0)), gate());
        let callers: Vec<_> = (0..200).map(|_| flights.join("image", || gated(&starts, &gate, 7))).collect();
        open(&gate);
        let results = futures_util::future::join_all(callers).await;
        assert!(results.iter().all(|r| matches!(r, Ok(7))), "{results:?}");
        assert_eq!(starts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn distinct_keys_run_separately_and_a_landed_flight_is_not_joined() {
        let flights = Flights::new();
        let (starts, gate) = (Arc::new(AtomicUsize::new(0)), gate());
        let a = flights.join("a", || gated(&starts, &gate, 1));
        let b = flights.join("b", || gated(&starts, &gate, 2));
        assert_eq!(in_flight(&flights), 2);
        open(&gate);
        assert_eq!((a.await.ok(), b.await.ok()), (Some(1), Some(2)));
        assert_eq!(in_flight(&flights), 0, "landed flights still listed");
        assert_eq!(flights.join("a", || gated(&starts, &gate, 3)).await.ok(), Some(3));
        assert_eq!(starts.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_does_not_strand_the_others() {
        let flights = Flights::new();
        let (starts, gate) = (Arc::new(AtomicUsize::new(0)), gate());
        let first = flights.join("image", || gated(&starts, &gate, 5));
        let second = flights.join("image", || gated(&starts, &gate, 6));
        // The first caller waits a while, then is dropped, as when the kubelet cancels its pull.
        assert!(tokio::time::timeout(Duration::from_millis(10), first).await.is_err());
        open(&gate);
        let result = tokio::time::timeout(Duration::from_secs(5), second).await.expect("second caller wedged");
        assert_eq!(result.ok(), Some(5));
        assert_eq!(starts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_panicking_run_fails_every_caller_and_is_not_joined_again() {
        let flights: Flights<&'static str, u32> = Flights::new();
        let gate = gate();
        let callers =
            [flights.join("image", || explode(gate.clone())), flights.join("image", || explode(gate.clone()))];
        open(&gate);
        for caller in callers {
            assert!(caller.await.is_err());
        }
        assert_eq!(in_flight(&flights), 0);
        assert_eq!(flights.join("image", || async { 9 }).await.ok(), Some(9));
    }
}
