//! The requests in flight: one spawned task per request, all owned by the dispatcher in a
//! [`JoinSet`], so a stop can wait for them within the drain bound and abort the rest, and a
//! task that dies still gives its job back (as a failed request) instead of leaving the agent
//! in flight for ever.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinSet};

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
}

impl Reply {
    /// The reply of a job whose task died (panicked or was aborted).
    fn lost(job: Job, why: String) -> Reply {
        let error = ApiError::Transport(format!("the request task failed: {why}"));
        match job {
            Job::PollStatus(_) => Reply::TaskStatus(Err(error)),
            Job::CreateTask(_) => Reply::TaskCreated(Err(error)),
            Job::FetchPorts(_) => Reply::Ports(Err(error)),
        }
    }
}

/// The spawned requests.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    tasks: JoinSet<(Job, Reply)>,
    /// Which job each task runs, to give it back if the task dies.
    jobs: HashMap<Id, Job>,
}

impl InFlight {
    /// Spawns one request.
    pub fn spawn<F>(&mut self, job: Job, request: F)
    where
        F: Future<Output = Reply> + Send + 'static,
    {
        let handle = self.tasks.spawn(async move { (job, request.await) });
        self.jobs.insert(handle.id(), job);
    }

    /// An answer that is ready now, if any.
    pub fn try_next(&mut self) -> Option<(Job, Reply)> {
        loop {
            let done = self.tasks.try_join_next_with_id()?;
            if let Some(answer) = self.settle(done) {
                return Some(answer);
            }
        }
    }

    /// The next answer; `None` at once when nothing is in flight (a `select!` branch with a
    /// `Some(..)` pattern is then disabled for that turn).
    pub async fn next(&mut self) -> Option<(Job, Reply)> {
        loop {
            let done = self.tasks.join_next_with_id().await?;
            if let Some(answer) = self.settle(done) {
                return Some(answer);
            }
        }
    }

    fn settle(
        &mut self,
        done: Result<(Id, (Job, Reply)), tokio::task::JoinError>,
    ) -> Option<(Job, Reply)> {
        match done {
            Ok((id, answer)) => {
                self.jobs.remove(&id);
                Some(answer)
            }
            // Every spawned task's job is recorded; `None` only if that were broken.
            Err(e) => {
                let job = self.jobs.remove(&e.id())?;
                Some((job, Reply::lost(job, e.to_string())))
            }
        }
    }

    /// Aborts whatever is still running and waits until it is gone. Returns how many were
    /// abandoned.
    pub async fn abort_all(&mut self) -> usize {
        let abandoned = self.tasks.len();
        self.tasks.shutdown().await;
        self.jobs.clear();
        abandoned
    }
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
