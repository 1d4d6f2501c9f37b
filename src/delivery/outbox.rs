//! A sink's outbox: the records waiting for delivery, the message in flight, and what the
//! sink's [`Kind`](super::kinds::Kind) keeps across restarts; kept in `state_dir` as
//! `outbox-{sink}.json`.
//!
//! Two parts: [`Outbox`], the queue alone (pure, unit-tested), and [`OutboxFile`], its file,
//! written and read with the state file's discipline ([`crate::state::StateFile`]: a temp
//! file created new with `O_NOFOLLOW`, mode 0600, fsync, rename, fsync of the folder; read
//! only when a regular file of at most [`MAX_OUTBOX_BYTES`], opened non-blocking). A file that
//! cannot be read is set aside as `outbox-{sink}.json.damaged-<unix time>` and the sink starts
//! with an empty outbox: reported (`state_damaged`), never a reason to stop the daemon.
//!
//! The rules the queue keeps, and why:
//! - Sequence numbers are never reused (`next_seq` is persisted even when the queue is
//!   empty): a message's id, `{sink}-{first_seq}-{last_seq}`, names the same events for
//!   ever, so a receiver can drop a repeat by id.
//! - The message in flight is always the first records of the queue, and is marked (id and
//!   sequence numbers) before it is sent; the worker persists that mark first, so a restart
//!   re-sends exactly that message, same id, same records.
//! - Bounded by `outbox_limit`: when full, the oldest record that is not in flight and ends no
//!   condition (`resolves`) is given up (counted, then reported as `delivery_failed`), so a
//!   full outbox still delivers the newest findings and every resolution it can.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Record;
use crate::state::{SetAside, StateError, StateFile, check_version};

/// The largest outbox file read, and written. 10,000 records (the default `outbox_limit`) of
/// a few KiB each take a few tens of MiB; a planted huge file cannot exhaust memory.
pub const MAX_OUTBOX_BYTES: u64 = 64 << 20;
/// Format version written into the file.
const VERSION: u32 = 1;

/// The message in flight: its stable id and the sequence numbers of its records (the first
/// records of the queue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InFlight {
    /// `{sink}-{first_seq}-{last_seq}` ([`message_id`]).
    pub id: String,
    /// Its records' sequence numbers, oldest first.
    pub seqs: Vec<u64>,
}

/// The stable id of the message carrying the records `first..=last` of `sink`.
pub fn message_id(sink: &str, first: u64, last: u64) -> String {
    format!("{sink}-{first}-{last}")
}

/// One sink's queue (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Outbox {
    sink: String,
    limit: usize,
    /// Shared, never changed in place: a save copies pointers under the lock and encodes
    /// outside it ([`Outbox::snapshot`]).
    records: VecDeque<Arc<Record>>,
    next_seq: u64,
    in_flight: Option<InFlight>,
    kind_state: serde_json::Value,
    /// Bumped at every change: what was last written is compared with it.
    version: u64,
    /// Records given up by a full outbox and not yet reported.
    evicted_unreported: u64,
}

impl Outbox {
    /// An empty outbox for `sink`, holding at most `limit` records (at least one).
    pub fn new(sink: &str, limit: usize) -> Outbox {
        Outbox {
            sink: sink.to_owned(),
            limit: limit.max(1),
            records: VecDeque::new(),
            next_seq: 1,
            in_flight: None,
            kind_state: serde_json::Value::Null,
            version: 0,
            evicted_unreported: 0,
        }
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Nothing to deliver.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The number of the next record.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Changes since the outbox was made or loaded (see [`OutboxFile`]'s writer).
    pub fn version(&self) -> u64 {
        self.version
    }

    fn changed(&mut self) {
        self.version = self.version.wrapping_add(1);
    }

    /// Appends `record` numbered with the next sequence number (its own `seq` is replaced),
    /// and returns that number with the record given up to make room, if the outbox was full.
    pub fn push(&mut self, mut record: Record) -> (u64, Option<Record>) {
        let seq = self.next_seq;
        // u64: at a million events a second, half a million years.
        self.next_seq = self.next_seq.saturating_add(1);
        record.seq = seq;
        self.records.push_back(Arc::new(record));
        self.changed();
        let evicted = (self.records.len() > self.limit)
            .then(|| self.evict_one())
            .flatten();
        (seq, evicted)
    }

    /// A record replayed from the journal ([`super::journal`]): kept, with its own number,
    /// when it is newer than everything this outbox has numbered (the snapshot holds the
    /// older ones, or they were delivered); returns whether it was kept.
    pub fn push_replayed(&mut self, record: Record) -> bool {
        if record.seq < self.next_seq {
            return false;
        }
        self.next_seq = record.seq.saturating_add(1);
        self.records.push_back(Arc::new(record));
        self.changed();
        if self.records.len() > self.limit {
            self.evict_one();
        }
        true
    }

    /// Gives up one record to make room: the oldest not in flight that resolves nothing, or
    /// else the oldest not in flight. The record just pushed is never in flight, so there
    /// always is one.
    fn evict_one(&mut self) -> Option<Record> {
        let flying = self.in_flight_len();
        let index = (flying..self.records.len())
            .find(|&i| !self.records[i].resolves)
            .or_else(|| (flying < self.records.len()).then_some(flying))?;
        let evicted = self.records.remove(index)?;
        self.evicted_unreported = self.evicted_unreported.saturating_add(1);
        self.changed();
        Some(Arc::unwrap_or_clone(evicted))
    }

    /// Records given up by a full outbox since the last call (for `delivery_failed`).
    pub fn take_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.evicted_unreported)
    }

    /// Records given up by a full outbox and not reported yet.
    pub fn evicted_unreported(&self) -> u64 {
        self.evicted_unreported
    }

    /// The message in flight, if any.
    pub fn in_flight(&self) -> Option<&InFlight> {
        self.in_flight.as_ref()
    }

    fn in_flight_len(&self) -> usize {
        self.in_flight.as_ref().map_or(0, |f| f.seqs.len())
    }

    /// What the next message is made of: the records in flight when there is a message in
    /// flight (a re-send carries exactly them), else the first `max` records. Shared: the
    /// caller copies them after releasing the outbox's lock.
    pub fn offer(&self, max: usize) -> Vec<Arc<Record>> {
        let n = match &self.in_flight {
            Some(f) => f.seqs.len(),
            None => max.max(1),
        };
        self.records.iter().take(n).cloned().collect()
    }

    /// Marks the first `covers` records (at least one, at most all) as the message in flight
    /// and returns its id. With a message in flight of that size already, nothing changes
    /// (its id is returned): a re-send is the same message.
    pub fn start(&mut self, covers: usize) -> Option<String> {
        let covers = covers.clamp(1, self.records.len().max(1));
        let first = self.records.front()?.seq;
        if let Some(f) = &self.in_flight
            && f.seqs.len() == covers
        {
            return Some(f.id.clone());
        }
        let seqs: Vec<u64> = self.records.iter().take(covers).map(|r| r.seq).collect();
        let last = *seqs.last().unwrap_or(&first);
        let id = message_id(&self.sink, first, last);
        self.in_flight = Some(InFlight {
            id: id.clone(),
            seqs,
        });
        self.changed();
        Some(id)
    }

    /// Removes the records of the message in flight (delivered, or given up) and returns
    /// them; none when nothing is in flight.
    pub fn finish_in_flight(&mut self) -> Vec<Record> {
        let Some(f) = self.in_flight.take() else {
            return Vec::new();
        };
        self.changed();
        self.records
            .drain(..f.seqs.len())
            .map(Arc::unwrap_or_clone)
            .collect()
    }

    /// Gives up every record not in flight emitted before `cutoff_ms` (Unix milliseconds);
    /// returns how many.
    pub fn give_up_before(&mut self, cutoff_ms: u64) -> usize {
        let flying = self.in_flight_len();
        let before = self.records.len();
        let mut index = 0;
        self.records.retain(|r| {
            let keep = index < flying || r.at_ms >= cutoff_ms;
            index += 1;
            keep
        });
        let given_up = before - self.records.len();
        if given_up > 0 {
            self.changed();
        }
        given_up
    }

    /// When the oldest record (the first of the message in flight, if any) was emitted.
    pub fn oldest_at_ms(&self) -> Option<u64> {
        self.records.front().map(|r| r.at_ms)
    }

    /// What the sink's kind saved ([`super::kinds::Kind::save`]).
    pub fn kind_state(&self) -> &serde_json::Value {
        &self.kind_state
    }

    /// Keeps what the sink's kind saved (persisted with the records).
    pub fn set_kind_state(&mut self, state: serde_json::Value) {
        if state != self.kind_state {
            self.kind_state = state;
            self.changed();
        }
    }

    /// What a save writes, taken under the outbox's lock: cheap (the records are shared,
    /// not copied), so an emit never waits for a large outbox to be encoded.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            sink: self.sink.clone(),
            next_seq: self.next_seq,
            in_flight: self.in_flight.clone(),
            kind_state: self.kind_state.clone(),
            records: self.records.iter().cloned().collect(),
        }
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.snapshot().encode()
    }

    /// The outbox a file held, checked: its sink, ascending sequence numbers below
    /// `next_seq`, a message in flight that is the first records with its own id. Over
    /// `limit`, records are given up as [`Outbox::push`] would (counted as unreported).
    fn from_file(sink: &str, limit: usize, file: FileIn) -> Result<Outbox, String> {
        if file.sink != sink {
            return Err(format!(
                "written for the sink {:?}, not {sink:?}",
                crate::events::printable(&file.sink)
            ));
        }
        let mut previous = 0;
        for r in &file.records {
            if r.seq <= previous || r.seq >= file.next_seq {
                return Err(format!(
                    "record {} out of order (next_seq {})",
                    r.seq, file.next_seq
                ));
            }
            previous = r.seq;
        }
        if let Some(f) = &file.in_flight {
            let prefix: Vec<u64> = file
                .records
                .iter()
                .take(f.seqs.len())
                .map(|r| r.seq)
                .collect();
            let expected = match (f.seqs.first(), f.seqs.last()) {
                (Some(first), Some(last)) => message_id(sink, *first, *last),
                _ => String::new(),
            };
            if f.seqs.is_empty() || prefix != f.seqs || f.id != expected {
                return Err("the message in flight is not the first records".to_owned());
            }
        }
        let mut outbox = Outbox::new(sink, limit);
        outbox.next_seq = file.next_seq;
        outbox.in_flight = file.in_flight;
        outbox.kind_state = file.kind;
        outbox.records = file.records.into_iter().map(Arc::new).collect();
        while outbox.records.len() > outbox.limit {
            if outbox.evict_one().is_none() {
                // Everything left is in flight: the message is composed again, smaller.
                outbox.in_flight = None;
            }
        }
        Ok(outbox)
    }
}

/// An outbox's content at one moment ([`Outbox::snapshot`]), to encode outside its lock.
#[derive(Debug, Clone)]
pub struct Snapshot {
    sink: String,
    next_seq: u64,
    in_flight: Option<InFlight>,
    kind_state: serde_json::Value,
    records: Vec<Arc<Record>>,
}

impl Snapshot {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let file = FileOut {
            version: VERSION,
            sink: &self.sink,
            next_seq: self.next_seq,
            in_flight: self.in_flight.as_ref(),
            kind: &self.kind_state,
            records: &self.records,
        };
        // Strings, numbers and JSON values only: serialising to memory cannot fail.
        let mut bytes = serde_json::to_vec(&file).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

#[derive(Serialize)]
struct FileOut<'a> {
    version: u32,
    sink: &'a str,
    next_seq: u64,
    in_flight: Option<&'a InFlight>,
    kind: &'a serde_json::Value,
    records: &'a [Arc<Record>],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    version: u32,
    sink: String,
    next_seq: u64,
    #[serde(default)]
    in_flight: Option<InFlight>,
    #[serde(default)]
    kind: serde_json::Value,
    records: Vec<Record>,
}

/// A sink's outbox file in `state_dir`.
#[derive(Debug, Clone)]
pub struct OutboxFile {
    file: StateFile,
}

impl OutboxFile {
    /// `outbox-{sink}.json` in `state_dir` (`sink` is `[a-z0-9_-]{1,32}`, checked by the
    /// config, so the name stays inside `state_dir`).
    pub fn for_sink(state_dir: &Path, sink: &str) -> OutboxFile {
        OutboxFile {
            file: StateFile::in_dir(state_dir).sibling(&format!("outbox-{sink}.json")),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Reads it; a missing file is an empty outbox.
    pub fn load(&self, sink: &str, limit: usize) -> Result<Outbox, StateError> {
        self.load_capped(sink, limit, MAX_OUTBOX_BYTES)
    }

    fn load_capped(&self, sink: &str, limit: usize, max: u64) -> Result<Outbox, StateError> {
        let Some(file) = self.file.read_json::<FileIn>(max)? else {
            return Ok(Outbox::new(sink, limit));
        };
        check_version(self.path(), file.version, VERSION)?;
        Outbox::from_file(sink, limit, file).map_err(|reason| StateError::Damaged {
            path: self.path().to_path_buf(),
            reason,
        })
    }

    /// Reads it for a sink that starts: a file that cannot be read is renamed (never
    /// overwritten) and the outbox starts empty; the error and the new name are returned
    /// for `state_damaged`. Fails only when such a file cannot be renamed.
    pub fn load_keeping_damaged(
        &self,
        sink: &str,
        limit: usize,
    ) -> Result<(Outbox, Option<SetAside>), StateError> {
        match self.load(sink, limit) {
            Ok(outbox) => Ok((outbox, None)),
            Err(error) => {
                let moved_to = self.file.set_aside()?;
                Ok((Outbox::new(sink, limit), Some(SetAside { error, moved_to })))
            }
        }
    }

    /// Writes `bytes` ([`Outbox::encode`]) atomically; content over [`MAX_OUTBOX_BYTES`] is
    /// not written (the next start would refuse it) and the previous file is kept.
    pub fn write(&self, bytes: &[u8]) -> Result<(), StateError> {
        if bytes.len() as u64 > MAX_OUTBOX_BYTES {
            return Err(StateError::TooLarge {
                path: self.path().to_path_buf(),
                limit: MAX_OUTBOX_BYTES,
            });
        }
        self.file.write(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Severity;

    fn record(at_ms: u64, resolves: bool) -> Record {
        Record {
            seq: 0,
            at_ms,
            event: "port_unexpected".to_owned(),
            account: None,
            severity: Severity::Warning,
            key: format!("k{at_ms}"),
            resolves,
            ends: None,
            message: format!("event at {at_ms}"),
            fields: serde_json::Map::new(),
        }
    }

    fn seqs(o: &Outbox) -> Vec<u64> {
        o.offer(usize::MAX).iter().map(|r| r.seq).collect()
    }

    #[test]
    fn sequence_numbers_are_never_reused() {
        let mut o = Outbox::new("s", 10);
        assert_eq!(o.push(record(1, false)).0, 1);
        assert_eq!(o.push(record(2, false)).0, 2);
        assert_eq!(o.start(2).as_deref(), Some("s-1-2"));
        assert_eq!(o.finish_in_flight().len(), 2);
        assert!(o.is_empty());
        assert_eq!(
            o.push(record(3, false)).0,
            3,
            "numbers go on after delivery"
        );
        assert_eq!(o.start(1).as_deref(), Some("s-3-3"));
    }

    #[test]
    fn the_message_in_flight_is_offered_again_unchanged() {
        let mut o = Outbox::new("s", 10);
        for at in 1..=5 {
            o.push(record(at, false));
        }
        assert_eq!(o.start(3).as_deref(), Some("s-1-3"));
        o.push(record(6, false));
        assert_eq!(
            seqs(&o).len(),
            3,
            "a re-send carries exactly the records in flight"
        );
        assert_eq!(o.offer(1).len(), 3, "whatever the offer's size");
        let v = o.version();
        assert_eq!(o.start(3).as_deref(), Some("s-1-3"), "same id");
        assert_eq!(o.version(), v, "no change to persist");
        let done: Vec<u64> = o.finish_in_flight().iter().map(|r| r.seq).collect();
        assert_eq!(done, [1, 2, 3]);
        assert_eq!(seqs(&o), [4, 5, 6]);
        assert_eq!(o.offer(2).len(), 2);
    }

    #[test]
    fn a_full_outbox_gives_up_the_oldest_record_that_resolves_nothing() {
        let mut o = Outbox::new("s", 3);
        o.push(record(1, true));
        o.push(record(2, false));
        o.push(record(3, false));
        let (_, evicted) = o.push(record(4, true));
        assert_eq!(
            evicted.map(|r| r.seq),
            Some(2),
            "the resolution (1) is kept"
        );
        assert_eq!(seqs(&o), [1, 3, 4]);
        assert_eq!(o.take_evicted(), 1);
        assert_eq!(o.take_evicted(), 0, "reported once");
        // In flight: never given up to make room.
        o.start(2);
        let (_, evicted) = o.push(record(5, false));
        assert_eq!(evicted.map(|r| r.seq), Some(5), "1 and 3 fly, 4 resolves");
        // Only resolutions left outside the message: the oldest of them goes.
        let (_, evicted) = o.push(record(6, true));
        assert_eq!(evicted.map(|r| r.seq), Some(4));
        assert_eq!(seqs(&o), [1, 3]);
        o.finish_in_flight();
        assert_eq!(seqs(&o), [6]);
    }

    #[test]
    fn old_records_are_given_up_except_those_in_flight() {
        let mut o = Outbox::new("s", 10);
        for at in [10, 20, 30, 40] {
            o.push(record(at, false));
        }
        o.start(1);
        assert_eq!(o.give_up_before(35), 2, "20 and 30; 10 flies");
        assert_eq!(o.len(), 2);
        assert_eq!(o.oldest_at_ms(), Some(10));
        assert_eq!(o.finish_in_flight()[0].seq, 1);
        assert_eq!(seqs(&o), [4]);
    }

    #[test]
    fn the_file_round_trips_and_keeps_the_message_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let file = OutboxFile::for_sink(dir.path(), "oncall");
        let mut o = Outbox::new("oncall", 10);
        for at in 1..=4 {
            o.push(record(at, at == 3));
        }
        o.start(2);
        o.set_kind_state(serde_json::json!({"firing": ["k1"]}));
        file.write(&o.encode()).unwrap();
        let back = file.load("oncall", 10).unwrap();
        assert_eq!(back.in_flight().map(|f| f.id.as_str()), Some("oncall-1-2"));
        assert_eq!(back.offer(10), o.offer(10));
        assert_eq!(back.next_seq(), 5);
        assert_eq!(back.kind_state(), o.kind_state());
        assert_eq!(back.records, o.records);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "private");
        // A smaller limit at the next start gives up what does not fit, as a push would.
        let mut small = file.load("oncall", 3).unwrap();
        assert_eq!(seqs(&small), [1, 2]);
        assert_eq!(small.len(), 3);
        assert_eq!(small.take_evicted(), 1);
    }

    #[test]
    fn damaged_files_are_set_aside_and_the_sink_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = OutboxFile::for_sink(dir.path(), "s");
        let mut o = Outbox::new("s", 10);
        o.push(record(1, false));
        o.push(record(2, false));
        let good = String::from_utf8(o.encode()).unwrap();
        let bad = [
            "{not json".to_owned(),
            good.replace("\"version\":1", "\"version\":9"),
            good.replace("\"sink\":\"s\"", "\"sink\":\"other\""),
            good.replace("\"next_seq\":3", "\"next_seq\":2"),
            good.replace(
                "\"in_flight\":null",
                r#""in_flight":{"id":"s-2-2","seqs":[2]}"#,
            ),
            good.replace("\"in_flight\":null", r#""in_flight":{"id":"x","seqs":[1]}"#),
        ];
        for (n, text) in bad.iter().enumerate() {
            std::fs::write(file.path(), text).unwrap();
            let (outbox, set_aside) = file.load_keeping_damaged("s", 10).unwrap();
            let set_aside = set_aside.unwrap_or_else(|| panic!("case {n} read: {text}"));
            assert!(outbox.is_empty());
            assert_eq!(set_aside.error.code(), "StateError.Damaged", "case {n}");
            assert_eq!(std::fs::read_to_string(&set_aside.moved_to).unwrap(), *text);
            assert!(!file.path().exists());
        }
        // Missing: empty, nothing set aside.
        let (outbox, set_aside) = file.load_keeping_damaged("s", 10).unwrap();
        assert!(outbox.is_empty() && set_aside.is_none());
        // Over the bound: refused, as a planted huge file would be.
        std::fs::write(file.path(), good.as_bytes()).unwrap();
        let err = file.load_capped("s", 10, 10).unwrap_err();
        assert_eq!(err.code(), "StateError.Damaged");
    }
}
