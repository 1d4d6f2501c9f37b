//! The open-port inventory, pure: validated port rows, page assembly into complete snapshots,
//! the diff between two snapshots, and the events a new snapshot yields (baseline or
//! `port_opened` / `port_closed`). No I/O and no clock: the engine feeds answers in, and
//! [`store`] persists what comes out.
//!
//! The rules (spec "Open-port inventory"):
//! - a port's identity is (`Port`, `ProcessName`); a new `Pid` alone is no event;
//! - a snapshot counts only when complete: the **distinct** rows fetched = `TotalCount`,
//!   `TotalCount` did not change between pages, and no row came twice (a server that ignores
//!   `Offset`, or a list that shifts into an overlap while paged); otherwise the pages are
//!   fetched again, [`FETCH_TRIES`] times in all, then `inventory_failed`. A partial snapshot
//!   is never compared;
//! - an agent's first complete snapshot is its baseline: one `inventory_baseline`, or with
//!   `baseline = "ports"` one `port_opened` per port, marked `baseline`;
//! - later snapshots go through [`confirm`]: opens are reported at once, a close only when a
//!   second complete fetch, taken after the one that missed the port, lacks it too
//!   ([`reconcile`]).
//!
//! Why distinct *rows* (a row = its `Id` with its `Port`, `ProcessName` and `Pid`) and not
//! distinct port identities (`Port`, `ProcessName`): one identity legitimately fills two rows
//! (a process listening on IPv4 and IPv6, or on TCP and UDP, as rpcbind and DNS servers do;
//! the API lists no protocol and no address), and counting identities would fail such an
//! agent at every fetch. A repeated row is still caught: a server that ignores `Offset` sends
//! the very same rows (same `Id`, same content) again, and a list that shifts while paged
//! repeats the row at the page boundary. A shift that skips a row instead (nothing repeated,
//! the count still right) is what close confirmation is for.

pub mod confirm;
pub mod store;

use std::collections::{BTreeSet, HashSet};

use crate::events::Event;
use crate::port_facts::{BindIp, FirstSeen, Proto};

/// `DescribeOpenPorts` rows per page (the API's maximum `Limit`).
pub const PAGE_LIMIT: u32 = 100;
/// Complete fetches tried per snapshot before `inventory_failed`.
pub const FETCH_TRIES: u32 = 3;
/// The most ports one agent's inventory may hold. A real host has a few hundred; a
/// `TotalCount` above this is refused (`inventory_failed`) rather than paged into memory.
pub const MAX_PORTS_PER_AGENT: u64 = 20_000;
/// The longest `ProcessName` accepted, in bytes (Linux cuts `comm` at 15, a full command
/// line is longer; past this it is no name but an attack on the logs).
pub const MAX_PROCESS_BYTES: usize = 1024;
/// The longest `MachineIp` / `MachineName` kept, in bytes.
pub const MAX_MACHINE_BYTES: usize = 256;

/// How an agent's first snapshot is reported (`[inventory] baseline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Baseline {
    /// One `inventory_baseline` event with the number of ports.
    #[default]
    Summary,
    /// One `port_opened` per port, each marked `baseline`.
    Ports,
}

/// One open port, as the API listed it and validation let through.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Port {
    /// 0..=65535 (a wider or negative `Port` never gets this far).
    pub port: u16,
    /// `ProcessName` as sent, at most [`MAX_PROCESS_BYTES`]; escaped whenever shown.
    pub process: Box<str>,
    /// `Pid`, ≥ 0 (`cwp`: 0 when the API did not say).
    pub pid: u32,
    /// What the `cwp` backend reports besides (`None` for yunjing's ports, and not written
    /// then, so yunjing's inventory files read and write as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwp: Option<Box<PortFacts>>,
}

/// A port's identity, borrowed: (`Port`, `ProcessName`, and for `cwp` (`Proto`, `BindIp`)).
pub type PortId<'a> = (u16, &'a str, Option<(&'a str, BindIp)>);

impl Port {
    /// The identity diffs compare: (`Port`, `ProcessName`) for yunjing; for `cwp` also
    /// (`Proto`, `BindIp`): `mysqld` on `127.0.0.1:3306` and on `0.0.0.0:3306` are two ports.
    pub fn key(&self) -> PortId<'_> {
        (
            self.port,
            &self.process,
            self.cwp.as_deref().map(|f| (f.proto.as_str(), f.bind_ip)),
        )
    }

    /// The identity, owned (kept in the inventory file for a close awaiting confirmation).
    pub fn owned_key(&self) -> PortKey {
        PortKey {
            port: self.port,
            process: self.process.clone(),
            proto: self.cwp.as_deref().map(|f| f.proto.clone()),
            bind_ip: self.cwp.as_deref().map(|f| f.bind_ip),
        }
    }
}

/// What the `cwp` backend knows of a port beyond yunjing's port, process and pid.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct PortFacts {
    /// `Proto`, lower case; empty when unknown. Identity.
    pub proto: Proto,
    /// `BindIp`. Identity.
    pub bind_ip: BindIp,
    /// `User`; empty when unknown.
    #[serde(default, skip_serializing_if = "empty")]
    pub user: Box<str>,
    /// `ProcessPath`; empty when unknown.
    #[serde(default, skip_serializing_if = "empty")]
    pub process_path: Box<str>,
    /// `FirstTime`: when CWP first saw the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<FirstSeen>,
}

#[allow(clippy::borrowed_box)] // serde hands the field as it is.
fn empty(text: &Box<str>) -> bool {
    text.is_empty()
}

/// A port's identity, owned: (`Port`, `ProcessName`), and for `cwp` (`Proto`, `BindIp`).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct PortKey {
    /// `Port`.
    pub port: u16,
    /// `ProcessName`.
    pub process: Box<str>,
    /// `Proto` (`cwp` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    /// `BindIp` (`cwp` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_ip: Option<BindIp>,
}

impl PortKey {
    /// As [`Port::key`] borrows it.
    pub fn key(&self) -> PortId<'_> {
        (
            self.port,
            &self.process,
            self.proto.as_ref().map(Proto::as_str).zip(self.bind_ip),
        )
    }
}

/// One page of `DescribeOpenPorts`, validated (see [`crate::api::Client::describe_open_ports`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// `TotalCount`.
    pub total: u64,
    /// `OpenPorts`, in answer order.
    pub rows: Vec<Port>,
    /// Each row's `Id`, in the same order (`None`, or no entry: the row had none). With the
    /// row's contents it tells a repeated row from a second row of one port identity.
    pub ids: Vec<Option<i64>>,
    /// `MachineIp` of the rows (the first non-empty one).
    pub machine_ip: String,
    /// `MachineName` of the rows (the first non-empty one).
    pub machine_name: String,
    /// `RequestId`.
    pub request_id: String,
}

/// A complete inventory of one agent: every row of one consistent listing.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// Sorted by identity ([`Port::key`]) then pid, without duplicate identities.
    pub ports: Vec<Port>,
    /// The machine's IP as the API reported it.
    #[serde(default)]
    pub machine_ip: String,
    /// The machine's name as the API reported it.
    #[serde(default)]
    pub machine_name: String,
}

impl Snapshot {
    /// A snapshot from rows in any order: sorted by identity, and one row per identity (the
    /// first by pid wins; two pids of one identity are one port open).
    pub fn from_rows(mut rows: Vec<Port>, machine_ip: String, machine_name: String) -> Self {
        rows.sort_by(|a, b| a.key().cmp(&b.key()).then_with(|| a.cmp(b)));
        rows.dedup_by(|b, a| a.key() == b.key());
        rows.shrink_to_fit();
        Snapshot {
            ports: rows,
            machine_ip,
            machine_name,
        }
    }
}

/// What changed between two snapshots, by identity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diff<'a> {
    /// In the new one only.
    pub opened: Vec<&'a Port>,
    /// In the old one only.
    pub closed: Vec<&'a Port>,
}

/// The ports opened and closed from `old` to `new`, each in (port, process) order.
pub fn diff<'a>(old: &'a Snapshot, new: &'a Snapshot) -> Diff<'a> {
    let before: BTreeSet<PortId<'_>> = old.ports.iter().map(Port::key).collect();
    let after: BTreeSet<PortId<'_>> = new.ports.iter().map(Port::key).collect();
    Diff {
        opened: new
            .ports
            .iter()
            .filter(|p| !before.contains(&p.key()))
            .collect(),
        closed: old
            .ports
            .iter()
            .filter(|p| !after.contains(&p.key()))
            .collect(),
    }
}

/// Why a fetch gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The listing never stayed consistent for a whole fetch.
    #[error("no complete listing in {tries} tries: {last}")]
    Incomplete {
        /// Fetches tried.
        tries: u32,
        /// What was wrong with the last one.
        last: String,
    },
    /// `TotalCount` above [`MAX_PORTS_PER_AGENT`].
    #[error("TotalCount {total} is above the {MAX_PORTS_PER_AGENT} ports one agent may hold")]
    TooMany {
        /// What the API said.
        total: u64,
    },
    /// The API kept failing (or answering what cannot be believed).
    #[error("{code}: {message}")]
    Api {
        /// The error's stable code.
        code: String,
        /// What happened.
        message: String,
    },
}

impl FetchError {
    /// Stable code, for `inventory_failed`'s `error_code`.
    pub fn code(&self) -> &str {
        match self {
            FetchError::Incomplete { .. } => "InventoryError.Incomplete",
            FetchError::TooMany { .. } => "InventoryError.TooMany",
            FetchError::Api { code, .. } => code,
        }
    }
}

/// What to do after a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Ask for the page at this offset.
    Next(u32),
    /// The listing is complete.
    Complete(Snapshot, String),
    /// Give up: `inventory_failed`.
    Failed(FetchError),
}

/// The pages of one fetch so far, and the tries used.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assembly {
    /// `TotalCount` of the first page of this try.
    total: Option<u64>,
    /// The rows of this try, each once, with its `Id`: a row already here is a repeat.
    rows: HashSet<(Option<i64>, Port)>,
    machine_ip: String,
    machine_name: String,
    /// Tries begun, the current one included (≥ 1 once started).
    tries: u32,
    /// Failed requests in this fetch (errors, not inconsistencies).
    errors: u32,
    /// 0: a fetch of its own; n: the n-th fetch in a row taken to confirm closes.
    confirming: u32,
}

impl Assembly {
    /// A fetch about to begin its first try.
    pub fn new() -> Self {
        Assembly {
            tries: 1,
            ..Default::default()
        }
    }

    /// A fetch taken to confirm closes, the `nth` in a row (see [`confirm`]).
    pub fn confirming(nth: u32) -> Self {
        Assembly {
            confirming: nth,
            ..Assembly::new()
        }
    }

    /// 0 for a fetch of its own, else which confirming fetch in a row this is.
    pub fn confirming_nth(&self) -> u32 {
        self.confirming
    }

    /// The offset of the next page to ask for.
    pub fn offset(&self) -> u32 {
        u32::try_from(self.rows.len()).unwrap_or(u32::MAX)
    }

    /// Tries begun so far.
    pub fn tries(&self) -> u32 {
        self.tries
    }

    /// Starts the fetch over (an inconsistent listing), or gives up after [`FETCH_TRIES`].
    fn again(&mut self, why: String) -> Step {
        if self.tries >= FETCH_TRIES {
            return Step::Failed(FetchError::Incomplete {
                tries: self.tries,
                last: why,
            });
        }
        let tries = self.tries + 1;
        *self = Assembly {
            tries,
            errors: self.errors,
            confirming: self.confirming,
            ..Default::default()
        };
        Step::Next(0)
    }

    /// A request of this fetch failed (after validation or on the wire): the same page is
    /// asked again, up to [`FETCH_TRIES`] failures in all, then the fetch fails with it.
    pub fn failed(&mut self, code: &str, message: &str) -> Step {
        self.errors = self.errors.saturating_add(1);
        if self.errors >= FETCH_TRIES {
            return Step::Failed(FetchError::Api {
                code: code.to_owned(),
                message: message.to_owned(),
            });
        }
        Step::Next(self.offset())
    }

    /// One page arrived for the offset [`Assembly::offset`] asked for.
    pub fn page(&mut self, page: Page) -> Step {
        if page.total > MAX_PORTS_PER_AGENT {
            return Step::Failed(FetchError::TooMany { total: page.total });
        }
        match self.total {
            None => self.total = Some(page.total),
            Some(total) if total != page.total => {
                return self.again(format!(
                    "TotalCount changed from {total} to {} while paging",
                    page.total
                ));
            }
            Some(_) => {}
        }
        let total = page.total;
        let got = page.rows.len();
        if self.machine_ip.is_empty() {
            self.machine_ip = page.machine_ip;
        }
        if self.machine_name.is_empty() {
            self.machine_name = page.machine_name;
        }
        let at = self.offset();
        let mut repeated = 0usize;
        for (i, row) in page.rows.into_iter().enumerate() {
            let id = page.ids.get(i).copied().flatten();
            if !self.rows.insert((id, row)) {
                repeated += 1;
            }
        }
        if repeated > 0 {
            // Counting it would fill the count with rows already had, and leave out others.
            return self.again(format!(
                "{repeated} rows of the page at offset {at} were listed before (Offset \
                 ignored, or the list shifted while paged)"
            ));
        }
        let have = self.rows.len() as u64;
        if have > total {
            return self.again(format!("{have} rows for TotalCount {total}"));
        }
        if have == total {
            let rows = std::mem::take(&mut self.rows)
                .into_iter()
                .map(|(_, port)| port)
                .collect();
            let snapshot = Snapshot::from_rows(
                rows,
                std::mem::take(&mut self.machine_ip),
                std::mem::take(&mut self.machine_name),
            );
            return Step::Complete(snapshot, page.request_id);
        }
        if got < PAGE_LIMIT as usize {
            // A short page before the end: the listing shrank, or TotalCount lies.
            return self.again(format!(
                "a page of {got} rows ended the listing at {have} of TotalCount {total}"
            ));
        }
        Step::Next(self.offset())
    }
}

/// The agent an event is about.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    /// Its Uuid.
    pub uuid: &'a str,
    /// Its name, empty when none.
    pub name: &'a str,
}

/// What a complete snapshot does to an agent's stored inventory: the events to report now,
/// the snapshot to store, and the closes that await confirmation.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconciled {
    /// Baseline events, opens, and confirmed closes (closes first).
    pub events: Vec<Event>,
    /// What is stored: the new snapshot, plus the ports it missed for the first time (still
    /// reported open until confirmed, with what was known of them).
    pub stored: Snapshot,
    /// Ports of `stored` the new snapshot missed for the first time: a fetch must confirm
    /// them (see [`confirm`]).
    pub unconfirmed: Vec<PortKey>,
}

/// The events and the stored state a complete snapshot `new` yields, against the last stored
/// one and the ports it awaits confirmation for (`None`: the first, the baseline).
pub fn reconcile(
    who: Who<'_>,
    last: Option<(&Snapshot, &[PortKey])>,
    new: Snapshot,
    baseline: Baseline,
    request_id: &str,
) -> Reconciled {
    let port_event = |p: &Port, opened: bool, is_baseline: bool| {
        let (uuid, agent_name) = (who.uuid.to_owned(), who.name.to_owned());
        let (port, process_name, pid) = (p.port, p.process.to_string(), p.pid);
        let (machine_ip, machine_name) = (new.machine_ip.clone(), new.machine_name.clone());
        let request_id = request_id.to_owned();
        let cwp = p.cwp.clone();
        if opened {
            Event::PortOpened {
                uuid,
                agent_name,
                port,
                process_name,
                pid,
                machine_ip,
                machine_name,
                request_id,
                baseline: is_baseline,
                cwp,
            }
        } else {
            Event::PortClosed {
                uuid,
                agent_name,
                port,
                process_name,
                pid,
                machine_ip,
                machine_name,
                request_id,
                cwp,
            }
        }
    };
    let Some((last, awaiting)) = last else {
        let events = match baseline {
            Baseline::Summary => vec![Event::InventoryBaseline {
                uuid: who.uuid.to_owned(),
                agent_name: who.name.to_owned(),
                ports: new.ports.len(),
                request_id: request_id.to_owned(),
            }],
            Baseline::Ports => new
                .ports
                .iter()
                .map(|p| port_event(p, true, true))
                .collect(),
        };
        return Reconciled {
            events,
            stored: new,
            unconfirmed: Vec::new(),
        };
    };
    let awaiting: BTreeSet<PortId<'_>> = awaiting.iter().map(PortKey::key).collect();
    let judged = confirm::judge(&last.ports, &new.ports, Port::key, |k| awaiting.contains(k));
    let events = judged
        .closed
        .iter()
        .map(|p| port_event(p, false, false))
        .chain(judged.opened.iter().map(|p| port_event(p, true, false)))
        .collect();
    let unconfirmed: Vec<PortKey> = judged.unconfirmed.iter().map(|p| p.owned_key()).collect();
    let held: Vec<Port> = judged.unconfirmed.into_iter().cloned().collect();
    let stored = if held.is_empty() {
        new
    } else {
        let Snapshot {
            mut ports,
            machine_ip,
            machine_name,
        } = new;
        ports.extend(held);
        Snapshot::from_rows(ports, machine_ip, machine_name)
    };
    Reconciled {
        events,
        stored,
        unconfirmed,
    }
}

#[cfg(test)]
mod tests;
