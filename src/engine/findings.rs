//! The expected-ports policy's side of the dispatcher: each agent's findings, evaluated by
//! [`crate::policy`] (pure) on its stored snapshot and compared with the findings stored beside
//! it (`StoredAgent::findings`, saved with the inventory), so every change is one event,
//! exactly once, across restarts.
//!
//! When an agent is evaluated:
//! - a complete snapshot was stored (`on_ports`: after the port events it yields; the stored
//!   snapshot still holds the closes awaiting confirmation, so a finding clears as `closed`
//!   only once its close is confirmed), the baseline included;
//! - it becomes watched with a stored snapshot (at start, added by a reload or discovery,
//!   back from being kept): the policy may have changed meanwhile;
//! - a new policy arrives ([`Control::Policy`](super::Control::Policy), on SIGHUP): every
//!   watched agent's stored snapshot, with no API call; only the differences are emitted.
//!
//! An agent removed from the watchlist, or whose kept entry is forgotten (discovery's
//! `forget_after`), has its findings cleared with reason `removed`. An agent discovery keeps
//! while its machine is away keeps its findings (it repeats none when it comes back).
//!
//! Without a policy ([`Engine::with_policy`] never called, or called with `None` and no
//! findings stored) nothing here runs beyond an `Option` check per snapshot.

use std::sync::Arc;

use super::Poller;
use super::agents::AgentTable;
use super::dispatcher::{Engine, PolicyState};
use crate::events::{Event, FindingEvent, FindingKind};
use crate::inventory::store::StoredAgent;
use crate::inventory::{Snapshot, Who};
use crate::policy::{self, Change, ClearReason, Finding, Findings, Host, Policy, PortFacts};
use crate::scheduler::AgentId;

/// What the policy sees of a stored port (yunjing: port and process).
pub(crate) fn port_facts(p: &crate::inventory::Port) -> PortFacts<'_> {
    let cwp = p.cwp.as_deref();
    PortFacts {
        port: p.port,
        process: &p.process,
        proto: cwp.map(|c| c.proto.as_str()),
        bind_ip: cwp.map(|c| c.bind_ip),
        user: cwp.map(|c| &*c.user).filter(|u| !u.is_empty()),
    }
}

/// The findings of `snapshot` on `host` under `policy` (none without one): what the engine
/// stores, and what `policy test` and `ports --unexpected` show.
pub fn evaluate(policy: Option<&Policy>, host: &Host<'_>, snapshot: &Snapshot) -> Findings {
    match policy {
        Some(policy) => policy.evaluate(host, snapshot.ports.iter().map(port_facts)),
        None => Findings::default(),
    }
}

/// The port of `snapshot` with this identity, if open in it.
fn open_in<'s>(
    snapshot: Option<&'s Snapshot>,
    port: u16,
    process: &str,
) -> Option<&'s crate::inventory::Port> {
    let s = snapshot?;
    // Sorted by identity, which starts with (port, process): a `cwp` port on two bind
    // addresses is two rows of one (port, process), either stands for it here.
    s.ports
        .binary_search_by(|p| (p.port, &*p.process).cmp(&(port, process)))
        .ok()
        .map(|i| &s.ports[i])
}

/// One event for a change of `who`'s findings. `snapshot` is the one evaluated (its
/// machine and the port's pid), `previous` the one before it (a closed port's last pid),
/// `request_id` the answer that completed `snapshot` (none for a reload or a removal).
pub(crate) fn finding_event(
    change: &Change<'_>,
    who: Who<'_>,
    snapshot: Option<&Snapshot>,
    previous: Option<&Snapshot>,
    request_id: Option<&str>,
) -> Event {
    let (finding, kind) = match *change {
        Change::Raised(f @ Finding::Unexpected { .. }) => (f, FindingKind::Unexpected),
        Change::Raised(f @ Finding::Missing { .. }) => (f, FindingKind::Missing),
        Change::Cleared(f @ Finding::Unexpected { .. }, r) => {
            (f, FindingKind::UnexpectedCleared(r))
        }
        Change::Cleared(f @ Finding::Missing { .. }, r) => (f, FindingKind::MissingCleared(r)),
    };
    let machine = snapshot.or(previous);
    let (machine_ip, machine_name) = machine
        .map(|s| (s.machine_ip.clone(), s.machine_name.clone()))
        .unwrap_or_default();
    let (port, process, rule, severity, spec, pid) = match finding {
        Finding::Unexpected {
            port,
            process,
            rule,
            severity,
        } => {
            let pid = open_in(snapshot, *port, process)
                .or_else(|| open_in(previous, *port, process))
                .map(|p| p.pid);
            (*port, process, rule, *severity, None, pid)
        }
        Finding::Missing {
            rule,
            spec,
            port,
            process,
            severity,
        } => (
            *port,
            process,
            rule,
            *severity,
            Some(spec.to_string()),
            None,
        ),
    };
    Event::Finding(Box::new(FindingEvent {
        kind,
        uuid: who.uuid.to_owned(),
        agent_name: who.name.to_owned(),
        port,
        process_name: process.to_string(),
        pid,
        machine_ip,
        machine_name,
        request_id: request_id.map(str::to_owned),
        rule: rule.to_string(),
        severity,
        spec,
    }))
}

/// What changed from `old` to `new` findings of one agent (see [`policy::changes`]:
/// `still_required` is [`Policy::requires`] on the host under the policy `new` came from).
pub(crate) struct Changed {
    /// One event per change.
    pub events: Vec<Event>,
    /// Findings in both whose rule or severity changed without a change of state (a reload
    /// moved them): no event, but the metrics must move them (old versions, new versions).
    pub moved: Option<(Findings, Findings)>,
}

/// The events from `old` to `new` findings of one agent.
pub(crate) fn finding_events(
    old: &Findings,
    new: &Findings,
    who: Who<'_>,
    snapshot: Option<&Snapshot>,
    previous: Option<&Snapshot>,
    request_id: Option<&str>,
    still_required: &dyn Fn(&str, &str) -> bool,
) -> Changed {
    let still_open = |port: u16, process: &str| open_in(snapshot, port, process).is_some();
    let changes = policy::changes(old, new, still_open, still_required);
    let events = changes
        .iter()
        .map(|c| finding_event(c, who, snapshot, previous, request_id))
        .collect();
    let mut kept_old = old.clone();
    let mut kept_new = new.clone();
    for change in &changes {
        match *change {
            Change::Cleared(f, _) => kept_old.0.remove(f),
            Change::Raised(f) => kept_new.0.remove(f),
        };
    }
    Changed {
        events,
        moved: (kept_old != kept_new).then_some((kept_old, kept_new)),
    }
}

/// The events clearing every finding of an agent removed or forgotten (`reason` `removed`).
pub fn removed_events(uuid: &str, entry: &StoredAgent) -> Vec<Event> {
    let who = Who {
        uuid,
        name: &entry.name,
    };
    let snapshot = entry.snapshot.as_deref();
    entry
        .findings
        .0
        .iter()
        .map(|f| {
            finding_event(
                &Change::Cleared(f, ClearReason::Removed),
                who,
                snapshot,
                None,
                None,
            )
        })
        .collect()
}

/// Calls `f` with what the policy knows of agent `id` (its table facts; without a name, its
/// snapshot's `machine_name`), or returns `None` for an id not in the table.
fn with_host<R>(
    agents: &AgentTable,
    id: AgentId,
    account: &str,
    machine_name: &str,
    f: impl FnOnce(&Host<'_>) -> R,
) -> Option<R> {
    agents.with_host(id, account, |host| {
        if host.name.is_empty() {
            f(&Host {
                name: machine_name,
                ..*host
            })
        } else {
            f(host)
        }
    })
}

impl<P: Poller> Engine<P> {
    /// Evaluates `policy` (none: no expected-ports policy) on the agents' stored snapshots
    /// from now on; `account` is the account's name, a host fact. Findings stored by an
    /// earlier run are compared, not repeated.
    pub fn with_policy(mut self, policy: Option<Arc<Policy>>, account: &str) -> Self {
        self.policy = Some(PolicyState {
            policy,
            account: account.into(),
        });
        self.policy_all();
        self
    }

    /// A new policy (a reload): every watched agent's stored snapshot evaluated again, no
    /// API call, only the differences emitted.
    pub(super) fn set_policy(&mut self, policy: Option<Arc<Policy>>) {
        match self.policy.as_mut() {
            Some(state) => state.policy = policy,
            None => {
                self.policy = Some(PolicyState {
                    policy,
                    account: crate::config::DEFAULT_ACCOUNT.into(),
                })
            }
        }
        self.policy_all();
    }

    /// After a watchlist change (a reload, a discovery pass that changed the list): names and
    /// facts of kept agents may have changed, so every watched agent is evaluated again when
    /// a policy is in force (no policy: nothing). Added agents were evaluated as they came.
    pub(super) fn policy_hosts_changed(&mut self) {
        if self.policy.as_ref().is_some_and(|s| s.policy.is_some()) {
            self.policy_all();
        }
    }

    /// Every watched agent evaluated on its stored snapshot.
    fn policy_all(&mut self) {
        if self.inventory.is_none() {
            return;
        }
        let ids: Vec<AgentId> = self.agents.watched().map(|(_, id)| id).collect();
        for id in ids {
            self.policy_evaluate(id, None, None);
        }
    }

    /// Evaluates agent `id`'s stored snapshot and emits what changed from its stored
    /// findings, storing the new ones. `request_id` is the answer that completed the
    /// snapshot, `previous` the snapshot before it (none: a re-evaluation).
    pub(super) fn policy_evaluate(
        &mut self,
        id: AgentId,
        request_id: Option<&str>,
        previous: Option<&Snapshot>,
    ) {
        let Some(state) = self.policy.as_ref() else {
            return;
        };
        let Some(inv) = self.inventory.as_mut() else {
            return;
        };
        let Some(record) = self.agents.get(id) else {
            return;
        };
        let uuid = record.uuid.text();
        let Some(entry) = inv.map.get_mut(&*uuid) else {
            return;
        };
        // No policy and nothing stored: nothing to compare, nothing to pay.
        if state.policy.is_none() && entry.findings.0.is_empty() {
            return;
        }
        let Some(snapshot) = entry.snapshot.clone() else {
            return;
        };
        let who = Who {
            uuid: &uuid,
            name: self.agents.name(id),
        };
        let policy = state.policy.as_deref();
        let old = &entry.findings;
        let evaluated = with_host(
            &self.agents,
            id,
            &state.account,
            &snapshot.machine_name,
            |host| {
                let new = evaluate(policy, host, &snapshot);
                if new == *old {
                    return None;
                }
                let still_required =
                    |rule: &str, spec: &str| policy.is_some_and(|p| p.requires(host, rule, spec));
                let changed = finding_events(
                    old,
                    &new,
                    who,
                    Some(&snapshot),
                    previous,
                    request_id,
                    &still_required,
                );
                Some((new, changed))
            },
        );
        let Some(Some((new, changed))) = evaluated else {
            return;
        };
        entry.findings = new;
        inv.saver.dirty = true;
        for event in &changed.events {
            self.sink.emit(event);
        }
        if let (Some(metrics), Some((old, new))) = (&self.metrics, &changed.moved) {
            metrics.findings_known(who.uuid, who.name, old, new);
        }
    }

    /// Tells the metrics the findings stored when the engine starts (no event repeats them):
    /// called by `with_inventory` before any evaluation (so `with_metrics` comes first).
    pub(super) fn seed_findings_metrics(&self) {
        let (Some(metrics), Some(inv)) = (&self.metrics, &self.inventory) else {
            return;
        };
        let none = Findings::default();
        for (uuid, entry) in inv.map.iter().chain(inv.held.iter()) {
            if !entry.findings.0.is_empty() {
                metrics.findings_known(uuid, &entry.name, &none, &entry.findings);
            }
        }
    }

    /// An entry dropped from the inventory (agent removed, or forgotten): its findings
    /// cleared, reason `removed`.
    pub(super) fn policy_removed(&self, uuid: &str, entry: &StoredAgent) {
        if entry.findings.0.is_empty() {
            return;
        }
        for event in removed_events(uuid, entry) {
            self.sink.emit(&event);
        }
    }
}
