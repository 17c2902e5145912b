//! Supervised background tasks: each is spawned with a name, a panic in one is logged with it
//! instead of vanishing, and all are joined at shutdown (cut short after a grace period).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::task::JoinSet;

/// The tasks of one process. Cheap to clone.
#[derive(Clone, Default)]
pub struct Tasks(Arc<Mutex<JoinSet<()>>>);

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tasks")
    }
}

impl Tasks {
    /// Runs `task` in the background under `name`.
    pub fn spawn(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Finished tasks are reaped as new ones come, so the set holds only running ones.
        while set.try_join_next().is_some() {}
        set.spawn(async move {
            if let Err(panic) = AssertUnwindSafe(task).catch_unwind().await {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(task = name, panic = %message, "a background task panicked");
            }
        });
    }

    /// How many tasks are still running.
    pub fn running(&self) -> usize {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        while set.try_join_next().is_some() {}
        set.len()
    }

    /// Waits for every task spawned so far, at most `grace`; then ends those still running.
    pub async fn join(&self, grace: Duration) {
        let mut set = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        let all = async { while set.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(left = set.len(), "background tasks still running at shutdown were ended");
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_are_joined_and_a_panic_stays_in_its_task() {
        let tasks = Tasks::default();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        tasks.spawn("panics", async { panic!("on purpose") });
        tasks.spawn("finishes", async move {
            tokio::task::yield_now().await;
            let _ = done_tx.send(());
        });
        struct Ended(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Ended {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let guard = Ended(ended.clone());
        tasks.spawn("never ends", async move {
            let _guard = guard;
            std::future::pending::<()>().await
        });
        assert!(done_rx.await.is_ok(), "the finishing task ran to its end beside the one that panicked");
        tasks.join(Duration::from_millis(200)).await;
        assert!(ended.load(std::sync::atomic::Ordering::SeqCst), "the one that never ends was ended");
    }
}
