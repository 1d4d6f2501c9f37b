//! The daemon's sink, [`TracingSink`]: one `tracing` event per [`Event`] with its fields, and
//! the per-thread mark of the account an event is emitted for ([`emitted_as`]).

use tracing::Level;

use super::{Event, EventSink, TARGET};

/// Emits at a level chosen at run time (tracing's macros want a constant level).
/// Every event gets `account` while an [`crate::account::AccountSink`] emits it
/// (several accounts); a `None` field is not written at all.
macro_rules! at_level {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            Level::ERROR => tracing::event!(target: TARGET, Level::ERROR, account = crate::events::current_account().as_deref(), $($rest)+),
            Level::WARN => tracing::event!(target: TARGET, Level::WARN, account = crate::events::current_account().as_deref(), $($rest)+),
            Level::INFO => tracing::event!(target: TARGET, Level::INFO, account = crate::events::current_account().as_deref(), $($rest)+),
            Level::DEBUG => tracing::event!(target: TARGET, Level::DEBUG, account = crate::events::current_account().as_deref(), $($rest)+),
            _ => tracing::event!(target: TARGET, Level::TRACE, account = crate::events::current_account().as_deref(), $($rest)+),
        }
    };
}

/// The daemon's sink: one `tracing` event per [`Event`], fields named as in `docs/events.md`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingSink;

impl EventSink for TracingSink {
    fn emit(&self, event: &Event) {
        let level = event.level();
        let name = event.name();
        let mid = event.message_id();
        let msg = event.message();
        match event {
            Event::StatusChanged {
                uuid,
                agent_name,
                from_status,
                to_status,
                request_id,
                error_code,
            } => at_level!(
                level,
                event = name,
                uuid = uuid.as_str(),
                agent_name = agent_name.as_str(),
                from_status = from_status.as_str(),
                to_status = to_status.as_str(),
                request_id = request_id.as_str(),
                error_code = error_code.as_deref(),
                message_id = mid,
                "{msg}"
            ),
            Event::PollFailed {
                uuid,
                agent_name,
                error_code,
                error_message,
                request_id,
                consecutive_failures,
            } => at_level!(
                level,
                event = name,
                uuid = uuid.as_str(),
                agent_name = agent_name.as_str(),
                error_code = error_code.as_str(),
                error_message = error_message.as_str(),
                request_id = request_id.as_deref(),
                consecutive_failures = *consecutive_failures,
                message_id = mid,
                "{msg}"
            ),
            Event::PollRecovered {
                uuid,
                agent_name,
                failed_polls,
            } => at_level!(
                level,
                event = name,
                uuid = uuid.as_str(),
                agent_name = agent_name.as_str(),
                failed_polls = *failed_polls,
                message_id = mid,
                "{msg}"
            ),
            Event::RateLimited {
                error_code,
                requests_per_second,
            } => at_level!(
                level,
                event = name,
                error_code = error_code.as_str(),
                requests_per_second = *requests_per_second,
                message_id = mid,
                "{msg}"
            ),
            Event::DeliveryFailed {
                sink,
                error_message,
                events,
            } => at_level!(
                level,
                event = name,
                sink = sink.as_str(),
                error_message = error_message.as_str(),
                events = *events,
                message_id = mid,
                "{msg}"
            ),
            Event::ClockSkew { skew_seconds } => at_level!(
                level,
                event = name,
                skew_seconds = *skew_seconds,
                message_id = mid,
                "{msg}"
            ),
            Event::CredentialsFailed {
                error_code,
                error_message,
                source,
            } => at_level!(
                level,
                event = name,
                error_code = error_code.as_str(),
                error_message = error_message.as_str(),
                source = source.as_str(),
                message_id = mid,
                "{msg}"
            ),
            // Not through `at_level!`: the event names its account itself (also with one
            // account), so the mark of an `AccountSink` would be a second `account` field.
            Event::AccountFailed {
                account,
                error_code,
                error_message,
                attempt,
                retry_in_seconds,
            } => tracing::event!(
                target: TARGET,
                Level::ERROR,
                account = account.as_str(),
                event = name,
                error_code = error_code.as_str(),
                error_message = error_message.as_str(),
                attempt = *attempt,
                retry_in_seconds = *retry_in_seconds,
                message_id = mid,
                "{msg}"
            ),
            Event::WatchlistLoaded {
                agents,
                added,
                removed,
                source,
                skipped,
            } => at_level!(
                level,
                event = name,
                agents = *agents as u64,
                added = *added as u64,
                removed = *removed as u64,
                source = source.as_str(),
                skipped = *skipped as u64,
                message_id = mid,
                "{msg}"
            ),
            Event::DiscoveryFailed {
                error_code,
                error_message,
                retry_in_seconds,
            } => at_level!(
                level,
                event = name,
                error_code = error_code.as_str(),
                error_message = error_message.as_str(),
                retry_in_seconds = *retry_in_seconds,
                message_id = mid,
                "{msg}"
            ),
            Event::ConfigRejected { error_message } => at_level!(
                level,
                event = name,
                error_message = error_message.as_str(),
                message_id = mid,
                "{msg}"
            ),
            Event::StateDamaged {
                path,
                error_message,
                moved_to,
            } => at_level!(
                level,
                event = name,
                path = path.as_str(),
                error_message = error_message.as_str(),
                moved_to = moved_to.as_str(),
                message_id = mid,
                "{msg}"
            ),
            Event::DaemonStarted { version, agents }
            | Event::DaemonStopping { version, agents } => {
                at_level!(
                    level,
                    event = name,
                    version = version.as_str(),
                    agents = *agents as u64,
                    message_id = mid,
                    "{msg}"
                )
            }
            Event::PortOpened {
                uuid,
                agent_name,
                port,
                process_name,
                pid,
                machine_ip,
                machine_name,
                request_id,
                baseline,
                cwp,
            } => at_level!(
                level,
                event = name,
                uuid = uuid.as_str(),
                agent_name = agent_name.as_str(),
                port = u64::from(*port),
                process_name = process_name.as_str(),
                pid = u64::from(*pid),
                machine_ip = machine_ip.as_str(),
                machine_name = machine_name.as_str(),
                request_id = request_id.as_str(),
                baseline = baseline.then_some(true),
                proto = cwp.as_deref().map(|c| c.proto.as_str()),
                bind_ip = cwp.as_deref().map(|c| tracing::field::display(c.bind_ip)),
                user = cwp.as_deref().map(|c| &*c.user).filter(|u| !u.is_empty()),
                process_path = cwp
                    .as_deref()
                    .map(|c| &*c.process_path)
                    .filter(|u| !u.is_empty()),
                first_seen = cwp
                    .as_deref()
                    .and_then(|c| c.first_seen.as_ref())
                    .map(tracing::field::display),
                message_id = mid,
                "{msg}"
            ),
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
            } => at_level!(
                level,
                event = name,
                uuid = uuid.as_str(),
                agent_name = agent_name.as_str(),
                port = u64::from(*port),
                process_name = process_name.as_str(),
                pid = u64::from(*pid),
                machine_ip = machine_ip.as_str(),
                machine_name = machine_name.as_str(),
                request_id = request_id.as_str(),
                proto = cwp.as_deref().map(|c| c.proto.as_str()),
                bind_ip = cwp.as_deref().map(|c| tracing::field::display(c.bind_ip)),
                user = cwp.as_deref().map(|c| &*c.user).filter(|u| !u.is_empty()),
                process_path = cwp
                    .as_deref()
                    .map(|c| &*c.process_path)
                    .filter(|u| !u.is_empty()),
                first_seen = cwp
                    .as_deref()
                    .and_then(|c| c.first_seen.as_ref())
                    .map(tracing::field::display),
                message_id = mid,
                "{msg}"
            ),
            Event::InventoryBaseline {
                uuid,
                agent_name,
                ports,
                request_id,
            } => at_level!(
                level,
                event = name,
                uuid = uuid.as_str(),
                agent_name = agent_name.as_str(),
                ports = *ports as u64,
                request_id = request_id.as_str(),
                message_id = mid,
                "{msg}"
            ),
            Event::InventoryFailed {
                uuid,
                agent_name,
                error_code,
                error_message,
            } => at_level!(
                level,
                event = name,
                uuid = uuid.as_str(),
                agent_name = agent_name.as_str(),
                error_code = error_code.as_str(),
                error_message = error_message.as_str(),
                message_id = mid,
                "{msg}"
            ),
            Event::ScanRequested {
                uuid,
                agent_name,
                reason,
                request_id,
            } => at_level!(
                level,
                event = name,
                uuid = uuid.as_str(),
                agent_name = agent_name.as_str(),
                reason = reason.as_str(),
                request_id = request_id.as_str(),
                message_id = mid,
                "{msg}"
            ),
            Event::LeaderElected {
                name: who,
                election,
            } => at_level!(
                level,
                event = name,
                name = who.as_str(),
                election = election.as_str(),
                message_id = mid,
                "{msg}"
            ),
            Event::LeadershipLost {
                name: who,
                holder,
                reason,
            } => at_level!(
                level,
                event = name,
                name = who.as_str(),
                holder = holder.as_deref(),
                reason = reason.as_str(),
                message_id = mid,
                "{msg}"
            ),
            Event::Finding(f) => at_level!(
                level,
                event = name,
                uuid = f.uuid.as_str(),
                agent_name = f.agent_name.as_str(),
                port = u64::from(f.port),
                process_name = f.process_name.as_str(),
                pid = f.pid.map(u64::from),
                machine_ip = f.machine_ip.as_str(),
                machine_name = f.machine_name.as_str(),
                request_id = f.request_id.as_deref(),
                rule = f.rule.as_str(),
                severity = f.severity.as_str(),
                reason = f.reason(),
                spec = f.spec.as_deref(),
                message_id = mid,
                "{msg}"
            ),
        }
    }
}

thread_local! {
    /// The account of the event being emitted on this thread, if any.
    static CURRENT_ACCOUNT: std::cell::RefCell<Option<std::sync::Arc<str>>> =
        const { std::cell::RefCell::new(None) };
}

/// The account of the event now being emitted on this thread (`None` with one account).
pub fn current_account() -> Option<std::sync::Arc<str>> {
    CURRENT_ACCOUNT.with(|c| c.borrow().clone())
}

/// Runs `emit` with `account` marked as the account of the events it emits (a thread-local:
/// `emit` is synchronous), restoring the previous mark afterwards, even if `emit` panics.
pub fn emitted_as(account: &std::sync::Arc<str>, emit: impl FnOnce()) {
    /// Puts the previous mark back on drop.
    struct Restore(Option<std::sync::Arc<str>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT_ACCOUNT.with(|c| *c.borrow_mut() = previous);
        }
    }
    let previous = CURRENT_ACCOUNT.with(|c| c.borrow_mut().replace(account.clone()));
    let _restore = Restore(previous);
    emit();
}
