//! Alert delivery (`[[sink]]`, `docs/delivery.md`): chosen events reach Alertmanager and chat
//! robots at least once, through an outbox in `state_dir` that survives crashes.
//!
//! How an event travels, and where each step lives:
//! - [`select`]: which events a sink takes (`events`, `min_severity`; a sink that takes a
//!   finding also takes its clear).
//! - [`record`]: the event as the outbox keeps it ([`Record`]: its own fields, account,
//!   severity, the condition it starts or resolves).
//! - `outbox`: the per-sink queue in `state_dir` (atomic, private, bounded, the message in
//!   flight kept with its stable id), made durable before the engine's state files
//!   ([`crate::state::SaveBarrier`]), so a crash between the two repeats an event, never loses
//!   one.
//! - `worker`: one task per sink: its own rate window, backoff up to `max_age`, digests over
//!   the rate; a slow or dead sink never delays another, nor the polling.
//! - [`kinds`]: what one receiver wants: the message (body, size limit, signature) and what
//!   its answer means. Pure, one file per kind.
//! - [`settings`]: the validated `[[sink]]` blocks and the secrets their files hold.

pub mod kinds;
pub mod record;
pub mod select;
pub mod settings;

pub use record::Record;
pub use select::EventSelector;
pub use settings::{ResolvedSink, SinkKind, SinkSettings, UrlSource};
