//! Shutdown, in one place: the signal every task listens to and the tasks that must finish.
//!
//! A [`Shutdown`] pairs a [`CancellationToken`] (cancelled on SIGTERM/SIGINT, when a command is
//! done, or by the command itself) with a [`TaskTracker`] that every background task is spawned
//! on: the stop-signal watcher, the CVM-role credentials refresher, the engine of `run`. A
//! command ends with [`Shutdown::finish`], which cancels, then waits for the tracked tasks
//! within a bound, so no task is cut off mid-write by the runtime's drop and none can hold the
//! process up for ever.

use std::future::Future;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long [`Shutdown::finish`] waits for background tasks after cancelling. They all stop
/// at the next `select!` on the token; this bound is for one that does not.
pub const GRACE: Duration = Duration::from_secs(5);

/// The stop signal and the tasks it stops.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    /// Nothing cancelled, nothing tracked yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token tasks select on; cancelled when the command stops.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Has the stop been asked for?
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the stop has been asked for.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// Asks every task to stop.
    pub fn cancel(&self) {
        self.token.cancel();
    }

    /// Spawns a background task that [`Shutdown::finish`] waits for. The task must stop by
    /// itself when the token is cancelled.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// How many tracked tasks are still running.
    pub fn tasks(&self) -> usize {
        self.tracker.len()
    }

    /// Cancels on the first of `signals` (a tracked task). Handlers are installed by the
    /// caller, before it tells anyone it is ready: a SIGTERM that arrives between start-up and
    /// the task's first poll must not kill the process with the default action.
    pub fn cancel_on(&self, mut signals: StopSignals) {
        let token = self.token.clone();
        self.spawn(async move {
            tokio::select! {
                _ = signals.recv() => token.cancel(),
                _ = token.cancelled() => {}
            }
        });
    }

    /// [`Shutdown::cancel_on`] SIGTERM/SIGINT, or on Ctrl-C alone when the handlers cannot
    /// be installed (a command that is not a daemon still stops on a keypress).
    pub fn cancel_on_stop_signals(&self) {
        match StopSignals::install() {
            Ok(signals) => self.cancel_on(signals),
            Err(e) => {
                tracing::debug!("SIGTERM/SIGINT handlers unavailable ({e}); Ctrl-C only");
                let token = self.token.clone();
                self.spawn(async move {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => token.cancel(),
                        _ = token.cancelled() => {}
                    }
                });
            }
        }
    }

    /// Cancels, then waits up to `within` for every tracked task. Returns whether they all
    /// finished; a straggler is logged and left to the runtime's drop.
    pub async fn finish(self, within: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        let finished = tokio::time::timeout(within, self.tracker.wait())
            .await
            .is_ok();
        if !finished {
            tracing::warn!(
                tasks = self.tracker.len(),
                "background tasks still running {} after the stop; leaving them",
                humantime::format_duration(within)
            );
        }
        finished
    }
}

/// SIGTERM and SIGINT handlers, installed.
#[derive(Debug)]
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    /// Installs both handlers now (from then on these signals no longer kill the process).
    pub fn install() -> std::io::Result<Self> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn finish_waits_for_tracked_tasks_that_stop_on_the_token() {
        let shutdown = Shutdown::new();
        let token = shutdown.token();
        let (done, mut seen) = tokio::sync::oneshot::channel();
        shutdown.spawn(async move {
            token.cancelled().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = done.send(());
        });
        assert!(shutdown.clone().finish(GRACE).await);
        assert!(
            seen.try_recv().is_ok(),
            "finish returned before the task ended"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn finish_gives_up_on_a_task_that_ignores_the_token() {
        let shutdown = Shutdown::new();
        shutdown.spawn(std::future::pending::<()>());
        let started = tokio::time::Instant::now();
        assert!(!shutdown.finish(Duration::from_secs(2)).await);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_stop_signal_cancels() {
        let shutdown = Shutdown::new();
        shutdown.cancel_on(StopSignals::install().unwrap());
        tokio::task::yield_now().await;
        // SAFETY: raise(3) delivers SIGINT to this process, whose handler is installed above.
        unsafe { libc::raise(libc::SIGINT) };
        tokio::time::timeout(Duration::from_secs(5), shutdown.cancelled())
            .await
            .expect("SIGINT cancels the token");
        assert!(shutdown.finish(GRACE).await);
    }
}
