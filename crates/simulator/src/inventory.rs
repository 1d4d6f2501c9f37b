//! The open-port inventory of one simulated agent over time: what a created task
//! (`CreateOpenPortTask`) does to the answer of `DescribeOpenPortTaskStatus`, when the agent's
//! latest task completed, and which port set `DescribeOpenPorts` serves. Pure functions over
//! the scenario and explicit times since the simulator's start, so the rules are tested without
//! a server.
//!
//! The rules (also in `config/scenario-example.toml`):
//! - The status at `t` is decided by the latest event at or before `t`: a timeline entry, or
//!   the creation of a task. A created task answers `COLLECTING` for the agent's
//!   `collect_time`, then `COMPLETE`, until a later timeline entry takes over (ties: the task
//!   wins, it was asked for).
//! - A created task completes at `created + collect_time`, unless a timeline entry falls in
//!   `(created, created + collect_time]` (the script interrupted it: it never completes).
//! - Completions are that, and every timeline entry with status `COMPLETE`. `DescribeOpenPorts`
//!   serves the agent's `ports` entry in force at the latest completion at or before `t`; no
//!   completion yet, or no `ports` entry at or before it: an empty list.
//! - `CreateOpenPortTask` is refused with `FailedOperation.CreateOpenPortTask` while the agent
//!   is `COLLECTING` (a task is running) or offline (status `AGENT_OFFLINE` or error
//!   `FailedOperation.AgentOffline`), and with `ResourceNotFound` while the script says so.

use std::time::Duration;

use super::scenario::{OpenPortSpec, PortsEntry, ScenarioAgent, ScriptedAnswer, TimelineEntry};

/// The status a created task answers while it runs.
pub const COLLECTING: &str = "COLLECTING";
/// The status a created task answers once done.
pub const COMPLETE: &str = "COMPLETE";

/// The latest task created for an agent through `CreateOpenPortTask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreatedTask {
    /// When it was created, since the simulator's start.
    pub created: Duration,
    /// The agent's latest completion before this task was created: kept so that the ports
    /// served while this task runs are still those of the previous task.
    pub completed_before: Option<Duration>,
}

/// What the status action answers at `t`, the task included (see the module docs).
pub fn status_at(agent: &ScenarioAgent, task: Option<&CreatedTask>, t: Duration) -> ScriptedAnswer {
    let entry = latest_entry(&agent.timeline, t);
    match task {
        Some(task) if task.created <= t && entry.is_none_or(|e| e.at <= task.created) => {
            let done = task
                .created
                .checked_add(agent.collect_time)
                .is_some_and(|done| done <= t);
            ScriptedAnswer::Status(if done { COMPLETE } else { COLLECTING }.to_owned())
        }
        _ => agent.answer_at(t).clone(),
    }
}

/// When the agent's latest task completed, at or before `t` (see the module docs).
pub fn latest_completion(
    agent: &ScenarioAgent,
    task: Option<&CreatedTask>,
    t: Duration,
) -> Option<Duration> {
    let scripted = agent
        .timeline
        .iter()
        .filter(|e| e.at <= t && matches!(&e.answer, ScriptedAnswer::Status(s) if s == COMPLETE))
        .map(|e| e.at)
        .max();
    let created = task.and_then(|task| {
        let done = task.created.checked_add(agent.collect_time)?;
        let interrupted = agent
            .timeline
            .iter()
            .any(|e| e.at > task.created && e.at <= done);
        (done <= t && !interrupted).then_some(done)
    });
    let before = task.and_then(|task| task.completed_before);
    [scripted, created, before].into_iter().flatten().max()
}

/// Why `CreateOpenPortTask` is refused at `t`, as `(code, message)`, or `None` to create.
pub fn refuse_create(
    agent: &ScenarioAgent,
    task: Option<&CreatedTask>,
    t: Duration,
) -> Option<(&'static str, &'static str)> {
    match status_at(agent, task, t) {
        ScriptedAnswer::Status(s) if s == COLLECTING => Some((
            "FailedOperation.CreateOpenPortTask",
            "A collection task is already running for this agent.",
        )),
        ScriptedAnswer::Status(s) if s == "AGENT_OFFLINE" => Some((
            "FailedOperation.CreateOpenPortTask",
            "The agent is offline; no task can be created.",
        )),
        ScriptedAnswer::Error(code) if code == "FailedOperation.AgentOffline" => Some((
            "FailedOperation.CreateOpenPortTask",
            "The agent is offline; no task can be created.",
        )),
        ScriptedAnswer::Error(code) if code == "ResourceNotFound" => {
            Some(("ResourceNotFound", "The agent does not exist."))
        }
        _ => None,
    }
}

/// The ports the agent's `ports` timeline has open at `at`, and since when (the entry's `at`).
pub fn ports_at(agent: &ScenarioAgent, at: Duration) -> Option<(Duration, &[OpenPortSpec])> {
    agent
        .ports
        .iter()
        .filter(|e| e.at <= at)
        // The last of equal `at`s, like the status timeline (the parser refuses duplicates).
        .max_by_key(|e| e.at)
        .map(|e| (e.at, e.open.as_slice()))
}

/// The agent's `ports` entry in force at `at` (what the `cwp` API serves: it has no tasks, its
/// asset list is the agent's latest report).
pub fn entry_at(agent: &ScenarioAgent, at: Duration) -> Option<&PortsEntry> {
    agent
        .ports
        .iter()
        .filter(|e| e.at <= at)
        .max_by_key(|e| e.at)
}

/// The greatest `at` not after `t`, among equal ones the later entry (as
/// [`ScenarioAgent::answer_at`]).
fn latest_entry(timeline: &[TimelineEntry], t: Duration) -> Option<&TimelineEntry> {
    let mut best: Option<&TimelineEntry> = None;
    for entry in timeline {
        if entry.at <= t && best.is_none_or(|b| entry.at >= b.at) {
            best = Some(entry);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::BEFORE_TIMELINE_ERROR;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn status(s: &str) -> ScriptedAnswer {
        ScriptedAnswer::Status(s.to_owned())
    }

    fn agent(timeline: &[(u64, ScriptedAnswer)]) -> ScenarioAgent {
        let mut a = ScenarioAgent::new(
            "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1",
            timeline
                .iter()
                .map(|(at, answer)| TimelineEntry {
                    at: secs(*at),
                    answer: answer.clone(),
                })
                .collect(),
        );
        a.collect_time = secs(5);
        a
    }

    fn task(created: u64, completed_before: Option<u64>) -> CreatedTask {
        CreatedTask {
            created: secs(created),
            completed_before: completed_before.map(secs),
        }
    }

    #[test]
    fn a_created_task_collects_for_collect_time_then_completes() {
        let a = agent(&[]);
        let t = task(10, None);
        assert_eq!(
            status_at(&a, Some(&t), secs(9)),
            ScriptedAnswer::Error(BEFORE_TIMELINE_ERROR.into())
        );
        assert_eq!(status_at(&a, Some(&t), secs(10)), status(COLLECTING));
        assert_eq!(
            status_at(&a, Some(&t), secs(15) - Duration::from_millis(1)),
            status(COLLECTING)
        );
        assert_eq!(status_at(&a, Some(&t), secs(15)), status(COMPLETE));
        assert_eq!(latest_completion(&a, Some(&t), secs(14)), None);
        assert_eq!(latest_completion(&a, Some(&t), secs(15)), Some(secs(15)));
    }

    #[test]
    fn the_latest_event_decides_between_timeline_and_task() {
        let offline = ScriptedAnswer::Error("FailedOperation.AgentOffline".into());
        let a = agent(&[(0, status(COMPLETE)), (30, offline.clone())]);
        let t = task(10, Some(0));
        // Before the task: the timeline.
        assert_eq!(status_at(&a, Some(&t), secs(5)), status(COMPLETE));
        assert_eq!(status_at(&a, Some(&t), secs(12)), status(COLLECTING));
        assert_eq!(status_at(&a, Some(&t), secs(20)), status(COMPLETE));
        // A later timeline entry takes over again.
        assert_eq!(status_at(&a, Some(&t), secs(30)), offline);
        // Completions: the scripted one at 0 s, then the task's at 15 s.
        assert_eq!(latest_completion(&a, Some(&t), secs(12)), Some(secs(0)));
        assert_eq!(latest_completion(&a, Some(&t), secs(40)), Some(secs(15)));
    }

    #[test]
    fn a_timeline_entry_during_collection_interrupts_the_task() {
        let a = agent(&[(0, status(COMPLETE)), (12, status("FAILED"))]);
        let t = task(10, Some(0));
        assert_eq!(status_at(&a, Some(&t), secs(11)), status(COLLECTING));
        assert_eq!(status_at(&a, Some(&t), secs(20)), status("FAILED"));
        // The task never completed: the ports stay those of the 0 s completion.
        assert_eq!(latest_completion(&a, Some(&t), secs(60)), Some(secs(0)));
        // An entry exactly at the completion instant interrupts too.
        let a = agent(&[(15, status("FAILED"))]);
        assert_eq!(latest_completion(&a, Some(&task(10, None)), secs(60)), None);
    }

    #[test]
    fn a_completion_before_the_task_is_remembered() {
        let a = agent(&[]);
        let t = task(100, Some(25));
        assert_eq!(latest_completion(&a, Some(&t), secs(101)), Some(secs(25)));
        assert_eq!(latest_completion(&a, Some(&t), secs(105)), Some(secs(105)));
    }

    #[test]
    fn scripted_completions_count_each_time() {
        let a = agent(&[
            (0, status(COMPLETE)),
            (8, status(COLLECTING)),
            (14, status(COMPLETE)),
        ]);
        assert_eq!(latest_completion(&a, None, secs(13)), Some(secs(0)));
        assert_eq!(latest_completion(&a, None, secs(14)), Some(secs(14)));
        assert_eq!(latest_completion(&agent(&[]), None, secs(99)), None);
    }

    #[test]
    fn create_is_refused_while_collecting_offline_or_gone() {
        let a = agent(&[
            (0, status(COLLECTING)),
            (10, status("AGENT_OFFLINE")),
            (
                20,
                ScriptedAnswer::Error("FailedOperation.AgentOffline".into()),
            ),
            (30, ScriptedAnswer::Error("ResourceNotFound".into())),
            (40, status(COMPLETE)),
            (50, status("FAILED")),
        ]);
        let code = |t| refuse_create(&a, None, secs(t)).map(|(c, _)| c);
        assert_eq!(code(0), Some("FailedOperation.CreateOpenPortTask"));
        assert_eq!(code(10), Some("FailedOperation.CreateOpenPortTask"));
        assert_eq!(code(20), Some("FailedOperation.CreateOpenPortTask"));
        assert_eq!(code(30), Some("ResourceNotFound"));
        assert_eq!(code(40), None);
        assert_eq!(code(50), None);
        // A running created task refuses another until it completes.
        let t = task(41, Some(40));
        assert_eq!(
            refuse_create(&a, Some(&t), secs(43)).map(|(c, _)| c),
            Some("FailedOperation.CreateOpenPortTask")
        );
        assert_eq!(refuse_create(&a, Some(&t), secs(46)), None);
        // Before the timeline (no task yet) a task may be created.
        assert_eq!(refuse_create(&agent(&[]), None, secs(0)), None);
    }

    #[test]
    fn ports_in_force_at_a_time() {
        let open = |port: u16| OpenPortSpec {
            port,
            process: "p".into(),
            pid: 1,
        };
        let mut a = agent(&[]);
        a.ports = vec![
            PortsEntry {
                at: secs(0),
                open: vec![open(22)],
                cwp: Vec::new(),
            },
            PortsEntry {
                at: secs(60),
                open: vec![open(22), open(3306)],
                cwp: Vec::new(),
            },
        ];
        assert_eq!(ports_at(&a, secs(59)), Some((secs(0), &[open(22)][..])));
        assert_eq!(ports_at(&a, secs(60)).map(|(_, p)| p.len()), Some(2));
        a.ports.remove(0);
        assert_eq!(ports_at(&a, secs(59)), None);
    }

    #[test]
    fn a_huge_collect_time_never_overflows() {
        let mut a = agent(&[]);
        a.collect_time = Duration::MAX;
        let t = task(10, None);
        assert_eq!(status_at(&a, Some(&t), Duration::MAX), status(COLLECTING));
        assert_eq!(latest_completion(&a, Some(&t), Duration::MAX), None);
    }
}
