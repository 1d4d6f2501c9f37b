//! The `cwp` backend's side of the dispatcher: its two lanes' jobs.
//!
//! **Statuses** (`DescribeMachines`, lane [`Action::ListMachines`]): the account's machines
//! are listed per machine type × region ([`CwpListing`], one cursor each, the cursor's index
//! being the id its lane's queue knows it by). A pass pages one listing (`Limit` 100) from
//! offset 0 to its `TotalCount`, its pages spread evenly over the status interval
//! (`[poll] interval`): page k of a listing of n pages is due k·interval/n after the pass
//! began, so 10,000 machines (100 pages) cost 100 requests a minute, never a burst, and the
//! lane's strict limiter holds whatever the interval. Each machine whose `Uuid` is watched
//! gives its agent its `AgentStatus` (passed through) and its `Quuid`; the status goes through
//! the same exactly-once rule as yunjing's ([`Engine::observe_status`]: `status_changed` when
//! it differs from the last known one, persisted in the state file). A machine missing from a
//! page is no status at all: a listing that shifts while paged can skip a row, and a skipped
//! row must not become an event.
//!
//! **Inventory** (`DescribeAssetPortInfoList`, lane [`Action::FetchAssetPorts`]): once an
//! agent's Quuid is known, its ports are listed at its slot in `rescan_interval` (by a hash of
//! its Uuid: spread evenly), first within one pass at the lane's rate when nothing is stored.
//! Pages are assembled by [`Listing`] (complete only when consistent: same total, no repeated
//! row, no short page before the end; 3 tries) and a complete listing goes through the same
//! reconcile, close confirmation, inventory file and policy as yunjing's
//! ([`Engine::store_snapshot`]). A fetch that fails 3 times (errors, or answers refused by the
//! checks of [`crate::api::cwp::ports`]) is `inventory_failed`, never a port event.

use std::time::Duration;

use tokio::time::Instant;

use super::Poller;
use super::cwp_state::{AssetFetch, Cursor};
pub use super::cwp_state::{CwpListing, PAGE, cwp_listings};
use super::dispatcher::Engine;
use super::in_flight::{InFlight, Reply};
use super::inventory::Confirm;
use super::lane::{Action, Job};
use crate::api::cwp::{self, AssetPort, MachinesPage, MachinesQuery, PortsPage, PortsQuery, Quuid};
use crate::api::{ApiError, ErrorClass};
use crate::events::Event;
use crate::inventory::{Port, Snapshot};
use crate::scheduler::{AgentId, Cadence, later, phase, phase_window};
use crate::status::Status;
use crate::tracker::{Known, RequestId};

/// A listing page that fails is asked again after this, doubling per failure in a row, at
/// most the status interval.
const LIST_RETRY: Duration = Duration::from_secs(2);

/// The next time after `now` at `offset` into a period of `interval` counted from `epoch`,
/// at least half an interval away (a first fetch just before its slot is not followed by a
/// second one at once): an agent's rescans keep its slot, so the agents' fetches stay spread
/// evenly over the interval.
pub(crate) fn rescan_slot(
    now: Instant,
    epoch: Instant,
    offset: Duration,
    interval: Duration,
) -> Instant {
    if interval.is_zero() {
        return now;
    }
    let earliest = later(now, interval / 2);
    let first = later(epoch, offset);
    if first >= earliest {
        return first;
    }
    let behind = earliest.duration_since(first).as_nanos();
    let period = interval.as_nanos();
    let periods = behind.div_ceil(period);
    let by =
        Duration::from_nanos(u64::try_from(periods.saturating_mul(period)).unwrap_or(u64::MAX));
    later(first, by)
}

impl<P: Poller> Engine<P> {
    /// The `cwp` listings this engine pages for its agents' statuses, the first pages due at
    /// once (spread by the lane's limiter). No effect on a yunjing engine.
    pub fn with_cwp_listings(mut self, listings: Vec<CwpListing>) -> Self {
        let Some(cwp) = self.cwp.as_mut() else {
            return self;
        };
        let now = Instant::now();
        let lane = self.account.lane(Action::ListMachines);
        for (i, listing) in listings.into_iter().enumerate() {
            cwp.cursors.push(Cursor {
                listing,
                offset: 0,
                pass_start: None,
                pages: 1,
                errors: 0,
                passes: 0,
            });
            lane.queue.schedule(i, now, Cadence::Settled);
        }
        self
    }

    /// Sends a `cwp` job; false when it needs no request after all.
    pub(super) fn send_cwp(&mut self, job: Job, in_flight: &mut InFlight) -> bool {
        let now = Instant::now();
        let poller = self.account.poller.clone();
        let metrics = self.metrics.clone();
        let Some(cwp) = self.cwp.as_mut() else {
            self.account
                .lane(job.action())
                .finish(job.agent(), None, now);
            return false;
        };
        match job {
            Job::ListMachines(i) => {
                let Some(cursor) = cwp.cursors.get_mut(i) else {
                    self.account.lane(job.action()).finish(i, None, now);
                    return false;
                };
                if cursor.offset == 0 {
                    cursor.pass_start = Some(now);
                }
                let query = match MachinesQuery::new(
                    cursor.listing.machine_type,
                    &cursor.listing.region,
                    cursor.offset,
                    PAGE,
                ) {
                    Ok(query) => query,
                    Err(e) => {
                        // A region `check` let through that the API cannot take: never sent.
                        tracing::error!(
                            region = &*crate::events::printable(&cursor.listing.region),
                            "DescribeMachines cannot be asked: {e}"
                        );
                        self.account.lane(job.action()).finish(i, None, now);
                        return false;
                    }
                };
                in_flight.spawn(job, async move {
                    let sent = Instant::now();
                    let result = poller.describe_machines(&query).await;
                    super::lane::answered(metrics.as_deref(), job.action(), &result, sent);
                    Reply::Machines(result)
                });
            }
            Job::FetchAssetPorts(id) => {
                let (Some(quuid), true) = (
                    cwp.quuids.get(&id).cloned(),
                    self.inventory.as_ref().is_some_and(|i| i.options.enabled),
                ) else {
                    cwp.fetches.remove(&id);
                    self.account.lane(job.action()).finish(id, None, now);
                    return false;
                };
                let fetch = cwp.fetches.entry(id).or_insert_with(|| AssetFetch::new(0));
                let query = match PortsQuery::new(quuid, fetch.listing.offset(), PAGE) {
                    Ok(query) => query,
                    Err(_) => {
                        self.account.lane(job.action()).finish(id, None, now);
                        return false;
                    }
                };
                in_flight.spawn(job, async move {
                    let sent = Instant::now();
                    let result = poller.describe_asset_ports(&query).await;
                    super::lane::answered(metrics.as_deref(), job.action(), &result, sent);
                    Reply::AssetPorts(result)
                });
            }
            _ => return false,
        }
        true
    }

    /// One page of a machine listing: statuses of the watched agents on it, their Quuids,
    /// and the next page at its place in the interval.
    pub(super) fn on_machines(&mut self, i: usize, result: Result<MachinesPage, ApiError>) {
        let now = Instant::now();
        let action = Action::ListMachines;
        let interval = self.config.intervals.settled;
        let page = match result {
            Ok(page) => page,
            Err(e) if cwp::class(&e) == ErrorClass::Throttled => {
                self.throttled(action, e.code(), now);
                self.account
                    .lane(action)
                    .finish(i, Some((now, Cadence::Settled)), now);
                return;
            }
            Err(e) => {
                let Some(cursor) = self.cwp.as_mut().and_then(|c| c.cursors.get_mut(i)) else {
                    self.account.lane(action).finish(i, None, now);
                    return;
                };
                cursor.errors = cursor.errors.saturating_add(1);
                let wait = LIST_RETRY
                    .saturating_mul(1 << cursor.errors.min(16).saturating_sub(1))
                    .min(interval);
                tracing::warn!(
                    machine_type = cursor.listing.machine_type.as_str(),
                    region = &*crate::events::printable(&cursor.listing.region),
                    offset = cursor.offset,
                    error_code = e.code(),
                    "DescribeMachines failed ({} in a row), asked again in {}s: {}",
                    cursor.errors,
                    wait.as_secs(),
                    crate::events::printable(&e.to_string())
                );
                self.cwp_credentials_error(&e, now);
                self.account.lane(action).finish(
                    i,
                    Some((later(now, wait), Cadence::Settled)),
                    now,
                );
                return;
            }
        };
        self.account.lane(action).succeeded(now);
        self.cwp_credentials_accepted();
        let rows = page.machines.len() as u64;
        let total = page.total;
        for machine in page.machines {
            let Some(uuid) = machine.uuid else { continue };
            let Some(id) = self.agents.id_of(&uuid) else {
                continue;
            };
            let status = Status::new(&machine.agent_status);
            self.observe_status(id, status, &page.request_id);
            self.cwp_matched(id, machine.quuid);
        }
        let Some(cursor) = self.cwp.as_mut().and_then(|c| c.cursors.get_mut(i)) else {
            self.account.lane(action).finish(i, None, now);
            return;
        };
        cursor.errors = 0;
        let reached = cursor.offset.saturating_add(rows);
        let start = cursor.pass_start.unwrap_or(now);
        cursor.pages = total.div_ceil(PAGE).max(1);
        let once = self.config.once;
        let next = if rows == PAGE && reached < total {
            // Page k of n at k/n of the interval from the pass's start (`once`: at once).
            cursor.offset = reached;
            let k = reached / PAGE;
            let share = interval.mul_f64(k as f64 / cursor.pages as f64);
            if once {
                now
            } else {
                later(start, share).max(now)
            }
        } else {
            // The pass is over (a short page, or the total reached): the next one starts one
            // interval after this one did.
            cursor.offset = 0;
            cursor.passes = cursor.passes.saturating_add(1);
            later(start, interval).max(now)
        };
        let all_passed = self
            .cwp
            .as_ref()
            .is_some_and(|c| c.cursors.iter().all(|c| c.passes > 0));
        if self.config.once && all_passed {
            // `once`: every listing was paged once; the agents not on them have no status,
            // and say why.
            self.pending_once = 0;
            let listed: Vec<String> = self.cwp.as_ref().map_or(Vec::new(), |c| {
                c.cursors
                    .iter()
                    .map(|c| {
                        format!(
                            "{} in {}",
                            c.listing.machine_type.as_str(),
                            c.listing.region
                        )
                    })
                    .collect()
            });
            let why = format!(
                "no machine with this Uuid in the DescribeMachines listings ({})",
                listed.join(", ")
            );
            let ids: Vec<AgentId> = self.agents.watched().map(|(_, id)| id).collect();
            for id in ids {
                if let Some(record) = self.agents.get_mut(id)
                    && !record.progress.done_once()
                {
                    let mut progress =
                        super::agents::Progress::from(std::mem::take(&mut record.progress));
                    progress.done_once = true;
                    progress.last_error = Some(why.clone());
                    record.progress = super::agents::StoredProgress::from(progress);
                }
            }
        }
        self.heartbeat.refresh_soon();
        self.account
            .lane(action)
            .finish(i, Some((next, Cadence::Settled)), now);
    }

    /// An answer got through: refused credentials work again.
    fn cwp_credentials_accepted(&mut self) {
        if self.account.credentials.refused {
            self.account.credentials.refused = false;
            self.heartbeat.set_credentials_failing(false);
        }
    }

    /// What an error says of the credentials, whichever lane it came in: refused ones close
    /// the gate, a bad temporary token wakes the refresher.
    fn cwp_credentials_error(&mut self, e: &ApiError, now: Instant) {
        match cwp::class(e) {
            ErrorClass::Fatal => self.cwp_credentials_refused(e, now),
            ErrorClass::CredentialsRefresh => {
                if let Some(n) = &self.account.refresh_credentials {
                    n.notify_one();
                }
            }
            _ => {}
        }
    }

    /// The API refused the credentials of a listing: the gate closes (one probe per
    /// `CREDENTIALS_EVENT_EVERY`), reported at most as often.
    fn cwp_credentials_refused(&mut self, e: &ApiError, now: Instant) {
        let gate = &mut self.account.credentials;
        gate.refused = true;
        let report = gate
            .last_event
            .is_none_or(|t| now.duration_since(t) >= super::CREDENTIALS_EVENT_EVERY);
        if report {
            gate.last_event = Some(now);
            self.sink.emit(&Event::CredentialsFailed {
                error_code: e.code().to_owned(),
                error_message: crate::events::printable(&e.to_string()).to_string(),
                source: self.account.credential_source.clone(),
            });
        }
        self.heartbeat.set_credentials_failing(true);
        if self.config.once {
            self.abort_once = Some(format!("{}: {e}", e.code()));
        }
    }

    /// `id`'s status as an answer stated it: `status_changed` once when it differs from the
    /// last known one (or none is known), the state file marked to be saved.
    pub(super) fn observe_status(&mut self, id: AgentId, status: Status, request_id: &str) {
        let Some((record, name)) = self.agents.get_mut_named(id) else {
            return;
        };
        let from = record.known.as_ref().map(|k| k.status.clone());
        let changed = from.as_ref() != Some(&status);
        // What this run saw of it (`once` reports it, and counts it done).
        let mut progress = super::agents::Progress::from(std::mem::take(&mut record.progress));
        progress.polled_once = true;
        progress.done_once = self.config.once;
        progress.last_error = None;
        if changed {
            progress.transitions = progress.transitions.saturating_add(1);
        }
        if self.config.once {
            progress.request_id = Some(request_id.to_owned());
        }
        record.progress = super::agents::StoredProgress::from(progress);
        if changed {
            let event = Event::StatusChanged {
                uuid: record.uuid.to_string(),
                agent_name: name.to_string(),
                from_status: from.unwrap_or(Status::Unknown),
                to_status: status.clone(),
                request_id: request_id.to_owned(),
                error_code: None,
            };
            record.known = Some(Known {
                status,
                request_id: RequestId::from(request_id.to_owned()),
                seen_at: crate::clock::unix_now(),
            });
            self.saver.mark_dirty();
            self.heartbeat.statuses_changed();
            self.sink.emit(&event);
        }
    }

    /// A listing named `id`'s machine: its Quuid kept, and its first port listing queued
    /// when none is.
    fn cwp_matched(&mut self, id: AgentId, quuid: Quuid) {
        let Some(cwp) = self.cwp.as_mut() else {
            return;
        };
        let known = cwp.quuids.get(&id);
        if known == Some(&quuid) {
            return;
        }
        if known.is_some() {
            // Another machine for this agent (reinstalled): a listing of the old one is
            // dropped; the new one is fetched at the agent's next turn.
            cwp.fetches.remove(&id);
        }
        cwp.quuids.insert(id, quuid);
        self.cwp_inventory_added(id);
    }

    /// A watched agent whose Quuid may be known: its port listing at its turn (soon when
    /// nothing is stored or closes await confirmation, else at its slot in the rescan
    /// interval).
    pub(super) fn cwp_inventory_added(&mut self, id: AgentId) {
        let (Some(cwp), Some(inv)) = (self.cwp.as_ref(), self.inventory.as_ref()) else {
            return;
        };
        if !inv.options.enabled || !cwp.quuids.contains_key(&id) {
            return;
        }
        let Some(record) = self.agents.get(id) else {
            return;
        };
        let lane_in_flight = self
            .account
            .lanes
            .iter()
            .any(|l| l.action == Action::FetchAssetPorts && l.queue.is_in_flight(id));
        if lane_in_flight {
            // Its answer schedules the next turn.
            return;
        }
        let uuid = record.uuid.text();
        let stored = inv.map.get(&*uuid);
        let settled = stored.is_some_and(|s| s.snapshot.is_some() && s.unconfirmed.is_empty());
        let rate = inv.options.action_rates[Action::FetchAssetPorts.index()];
        let window = if settled {
            inv.options.rescan_interval
        } else {
            phase_window(self.agents.len(), rate, self.config.intervals.settled)
        };
        let awaiting = stored.is_some_and(|s| !s.unconfirmed.is_empty());
        let due = later(Instant::now(), phase(&uuid, window));
        if awaiting && let Some(cwp) = self.cwp.as_mut() {
            cwp.fetches.insert(id, AssetFetch::new(1));
        }
        self.account
            .lane(Action::FetchAssetPorts)
            .queue
            .schedule(id, due, Cadence::Settled);
    }

    /// One page of `DescribeAssetPortInfoList`.
    pub(super) fn on_asset_ports(&mut self, id: AgentId, result: Result<PortsPage, ApiError>) {
        let now = Instant::now();
        let action = Action::FetchAssetPorts;
        if self.drop_orphan_answer(id, action) {
            return;
        }
        let rescan = self
            .inventory
            .as_ref()
            .map_or(Duration::ZERO, |i| i.options.rescan_interval);
        let again_after = self.config.intervals.settled;
        let (Some(cwp), Some(record)) = (self.cwp.as_mut(), self.agents.get(id)) else {
            self.account.lane(action).finish(id, None, now);
            return;
        };
        let (uuid, name) = (record.uuid.text(), self.agents.name(id).to_string());
        let Some(fetch) = cwp.fetches.get_mut(&id) else {
            // Its fetch was dropped while the page was on its way (its machine changed): the
            // page is dropped, never appended to another, and a listing of the machine it
            // has now starts at once.
            let again = cwp
                .quuids
                .contains_key(&id)
                .then_some((now, Cadence::Settled));
            self.account.lane(action).finish(id, again, now);
            return;
        };
        // Told to the credentials gate once this answer is handled.
        let mut credentials_error = None;
        let step = match result {
            Ok(page) => {
                for (slot, label) in [
                    (&mut fetch.machine_ip, page.machine_ip),
                    (&mut fetch.machine_name, page.machine_name),
                ] {
                    if slot.is_empty() {
                        *slot = label;
                    }
                }
                let step =
                    fetch
                        .listing
                        .page(page.total, page.rows, page.request_id, AssetPort::clone);
                self.account.lane(action).succeeded(now);
                step
            }
            Err(e) if cwp::class(&e) == ErrorClass::Throttled => {
                self.throttled(action, e.code(), now);
                self.account
                    .lane(action)
                    .finish(id, Some((now, Cadence::Settled)), now);
                return;
            }
            Err(e) => {
                let step = fetch
                    .listing
                    .failed(e.code(), &crate::events::printable(&e.to_string()));
                credentials_error = Some(e);
                step
            }
        };
        let mut evaluate = None;
        // The agent's own slot in the interval (by its Uuid), so fetches stay spread over
        // it whatever order the first ones came in.
        let epoch = self.inventory.as_ref().map_or(now, |i| i.epoch.0);
        let rescan_at = (!rescan.is_zero()).then(|| {
            let slot = rescan_slot(now, epoch, phase(&uuid, rescan), rescan);
            (slot, Cadence::Settled)
        });
        let next = match step {
            cwp::Step::Next(_) => Some((now, Cadence::Settled)),
            cwp::Step::Complete(rows, request_id) => {
                let Some(fetch) = cwp.fetches.remove(&id) else {
                    return;
                };
                let nth = fetch.listing.confirming_nth();
                let ports = cwp::port_set(rows)
                    .into_iter()
                    .map(Port::from_asset)
                    .collect();
                let snapshot = Snapshot::from_rows(ports, fetch.machine_ip, fetch.machine_name);
                let (next, previous) =
                    self.store_snapshot(id, (&uuid, &name), snapshot, &request_id, nth);
                evaluate = Some((request_id, previous));
                match next {
                    Confirm::Again(nth, at) | Confirm::Later(nth, at) => {
                        if let Some(cwp) = self.cwp.as_mut() {
                            cwp.fetches.insert(id, AssetFetch::new(nth));
                        }
                        Some((at, Cadence::Settled))
                    }
                    Confirm::Done => rescan_at,
                }
            }
            cwp::Step::Failed(e) => {
                cwp.fetches.remove(&id);
                self.sink.emit(&Event::InventoryFailed {
                    uuid: uuid.to_string(),
                    agent_name: name.clone(),
                    error_code: e.code().to_owned(),
                    error_message: crate::events::printable(&e.to_string()).to_string(),
                });
                let holding = self
                    .inventory
                    .as_ref()
                    .and_then(|i| i.map.get(&*uuid))
                    .is_some_and(|entry| !entry.unconfirmed.is_empty());
                if holding && let Some(cwp) = self.cwp.as_mut() {
                    // Closes awaiting confirmation: asked about again, never reported
                    // unconfirmed.
                    cwp.fetches.insert(id, AssetFetch::new(1));
                    Some((later(now, again_after), Cadence::Settled))
                } else {
                    rescan_at
                }
            }
        };
        if let Some((request_id, previous)) = evaluate {
            self.policy_evaluate(id, Some(&request_id), previous.as_deref());
        }
        match credentials_error {
            Some(e) => self.cwp_credentials_error(&e, now),
            None => self.cwp_credentials_accepted(),
        }
        self.account.lane(action).finish(id, next, now);
    }
}
