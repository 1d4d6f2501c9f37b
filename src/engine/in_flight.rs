//! The requests in flight: futures owned by the dispatcher in one [`FuturesUnordered`] and
//! polled by its loop, so a stop can wait for them within the drain bound and drop (abort) the
//! rest, and a request that panics still gives its job back (as a failed request) instead of
//! leaving the agent in flight for ever.
//!
//! Why not a task per request (a `JoinSet`, as before issue 13): a spawned task is woken and
//! run by the scheduler, then wakes the dispatcher with its result; on the daemon's one thread
//! that is an allocation, a scheduler round trip and a `JoinSet` lock per poll for nothing. As
//! futures of the dispatcher, an answer is handled in the same poll that completes it.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::lane::Job;
use crate::api::{ApiError, TaskStatus};

/// The answer to one job, per action.
#[derive(Debug)]
pub(crate) enum Reply {
    /// `DescribeOpenPortTaskStatus`.
    TaskStatus(Result<TaskStatus, ApiError>),
    /// `CreateOpenPortTask`: the RequestId.
    TaskCreated(Result<String, ApiError>),
    /// `DescribeOpenPorts`: one page.
    Ports(Result<crate::inventory::Page, ApiError>),
    /// `cwp` `DescribeMachines`: one page.
    Machines(Result<crate::api::cwp::MachinesPage, ApiError>),
    /// `cwp` `DescribeAssetPortInfoList`: one page.
    AssetPorts(Result<crate::api::cwp::PortsPage, ApiError>),
}

impl Reply {
    /// Not sent: the client's fence was closed (`[ha]`, [`ApiError::Fenced`]).
    pub(crate) fn fenced(&self) -> bool {
        let fenced = |e: &ApiError| matches!(e, ApiError::Fenced);
        match self {
            Reply::TaskStatus(r) => r.as_ref().err().is_some_and(fenced),
            Reply::TaskCreated(r) => r.as_ref().err().is_some_and(fenced),
            Reply::Ports(r) => r.as_ref().err().is_some_and(fenced),
            Reply::Machines(r) => r.as_ref().err().is_some_and(fenced),
            Reply::AssetPorts(r) => r.as_ref().err().is_some_and(fenced),
        }
    }

    /// The reply of a job whose request died (panicked).
    fn lost(job: Job, why: String) -> Reply {
        let error = ApiError::Transport(format!("the request task failed: {why}"));
        match job {
            Job::PollStatus(_) => Reply::TaskStatus(Err(error)),
            Job::CreateTask(_) => Reply::TaskCreated(Err(error)),
            Job::FetchPorts(_) => Reply::Ports(Err(error)),
            Job::ListMachines(_) => Reply::Machines(Err(error)),
            Job::FetchAssetPorts(_) => Reply::AssetPorts(Err(error)),
        }
    }
}

/// One request and its job.
type Request = Pin<Box<dyn Future<Output = (Job, Reply)> + Send>>;

/// The requests in flight.
#[derive(Default)]
pub(crate) struct InFlight {
    requests: FuturesUnordered<Request>,
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("requests", &self.requests.len())
            .finish()
    }
}

impl InFlight {
    /// Starts one request (it runs while the dispatcher waits for [`InFlight::next`]).
    pub fn spawn<F>(&mut self, job: Job, request: F)
    where
        F: Future<Output = Reply> + Send + 'static,
    {
        self.requests.push(Box::pin(async move {
            // A panic in a request must not take the dispatcher down with it.
            match AssertUnwindSafe(request).catch_unwind().await {
                Ok(reply) => (job, reply),
                Err(panic) => (job, Reply::lost(job, panic_text(panic.as_ref()))),
            }
        }));
    }

    /// An answer that is ready now, if any.
    pub fn try_next(&mut self) -> Option<(Job, Reply)> {
        // Polling here with a no-op waker loses nothing: every request keeps its own waker
        // in the set, and the loop's next `next()` registers the dispatcher's again.
        self.requests.next().now_or_never().flatten()
    }

    /// The next answer; `None` at once when nothing is in flight (a `select!` branch with a
    /// `Some(..)` pattern is then disabled for that turn).
    pub async fn next(&mut self) -> Option<(Job, Reply)> {
        self.requests.next().await
    }

    /// Drops (cancels) whatever is still in flight. Returns how many were abandoned.
    pub async fn abort_all(&mut self) -> usize {
        let abandoned = self.requests.len();
        self.requests.clear();
        abandoned
    }
}

/// What a panic said, when it said it with a string.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "it panicked".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_task_that_dies_gives_its_job_back_as_a_failed_request() {
        let mut f = InFlight::default();
        f.spawn(Job::PollStatus(3), async { panic!("boom") });
        let (job, reply) = f.next().await.unwrap();
        assert_eq!(job, Job::PollStatus(3));
        let Reply::TaskStatus(Err(e)) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(e.code(), "ClientError.Transport");
        assert!(f.next().await.is_none());
        f.spawn(Job::PollStatus(4), std::future::pending());
        assert_eq!(f.abort_all().await, 1);
        assert!(f.next().await.is_none());
    }
}
