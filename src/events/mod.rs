//! The events consumers act on: their names, fields, levels, journal MESSAGE_IDs and readable
//! messages. `docs/events.md` is the contract; this module is its only implementation.
//!
//! The engine produces [`Event`] values and hands them to an [`EventSink`]. The daemon's sink
//! ([`TracingSink`]) turns each into one `tracing` event with the event's fields, which
//! [`crate::logging`] renders as text, JSON lines or journal entries. Tests use
//! [`CollectingSink`] and see exactly what would have been logged.
//!
//! The catalogue ([`Event`], `catalogue.rs`; the policy's [`FindingEvent`], `finding.rs`; the
//! [`message_id`]s) says what an event is; the sinks (`sink.rs`, `tracing_sink.rs`) say where
//! it goes.

mod catalogue;
pub(crate) mod fields;
mod finding;
pub mod message_id;
mod sink;
mod tracing_sink;

pub use catalogue::{Event, WatchlistSource};
pub use finding::{FindingEvent, FindingKind};
pub use sink::{CollectingSink, EventSink, Tee};
pub use tracing_sink::{TracingSink, current_account, emitted_as};

/// Target of every event, so filters can keep events and drop chatter.
pub const TARGET: &str = "cwp_portwatch::events";

/// `text` with every unsafe character escaped ([`crate::escape::escape`]): what any text from
/// outside (an API answer, a file, a path) becomes before it reaches an event message.
pub fn printable(text: &str) -> String {
    crate::escape::escape(text).into_owned()
}

/// `web-01 (6b6cd843…)`, or just the short Uuid without a name.
fn who(name: &str, uuid: &str) -> String {
    let short: String = uuid.chars().take(8).collect();
    if name.is_empty() {
        format!("{short}…")
    } else {
        format!("{name} ({short}…)")
    }
}

#[cfg(test)]
mod tests;
