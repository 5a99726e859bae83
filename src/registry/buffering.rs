//! How many response-body bytes the running check may keep, as its caller decides.
//!
//! Waiting for a registry to answer costs a socket; its answer can cost up to
//! `MANIFEST_MAX_BYTES`. So a memory bound belongs on the bytes kept, not on the requests sent:
//! one on requests lets checks stuck on registries that never answer fill it while holding
//! nothing. Before `read_capped` keeps body bytes it tells the `Buffering` of the task it runs in
//! how many, and waits until they are allowed; the decision layer's slots decide.
//!
//! It travels as a task-local rather than a parameter because the bytes arrive deep in the HTTP
//! client while the bound belongs to the check running the requests, and every registry call in
//! between (and the check's own code) would otherwise have to carry it. Requests made outside
//! [`scope`] (tests of the client, one-off tools) keep what they read without asking; work
//! spawned onto another task from inside a scope leaves it too.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;

pub trait Buffering: Send + Sync {
    /// Resolves once the task may keep `bytes` more bytes than it already reserved. Reservations
    /// add up and are never given back within one scope: what a check read earlier (a
    /// signature manifest) is still held while it reads more.
    fn reserve(&self, bytes: usize) -> BoxFuture<'_, ()>;
}

tokio::task_local! {
    static CURRENT: Arc<dyn Buffering>;
}

/// Runs `work` with its body bytes reserved from `buffering`.
pub async fn scope<F: Future>(buffering: Arc<dyn Buffering>, work: F) -> F::Output {
    CURRENT.scope(buffering, work).await
}

/// Waits until the running task may keep `bytes` more body bytes.
pub async fn reserve(bytes: usize) {
    let current = CURRENT.try_with(Arc::clone).ok();
    if let Some(current) = current {
        current.reserve(bytes).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<usize>>);

    impl Buffering for Recorder {
        fn reserve(&self, bytes: usize) -> BoxFuture<'_, ()> {
            self.0.lock().unwrap().push(bytes);
            Box::pin(async {})
        }
    }

    #[tokio::test]
    async fn reservations_reach_the_scope_they_are_made_in_and_no_other() {
        let recorder = Arc::new(Recorder::default());
        reserve(1).await;
        scope(recorder.clone(), async {
            reserve(2).await;
            futures_util::future::join(reserve(3), reserve(4)).await;
        })
        .await;
        reserve(5).await;
        assert_eq!(*recorder.0.lock().unwrap(), vec![2, 3, 4]);
    }
}
