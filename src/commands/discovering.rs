//! The daemon's side of discovery ([`Discovering`]): the refresh loop's results for one
//! account, merged with its listed agents and applied to its engine like a reload.

use std::sync::Arc;

use tokio::sync::watch;

use crate::agent_uuid::AgentUuid;
use crate::api::Client;
use crate::config::Settings;
use crate::discovery::{self, Discovered, Discovery};
use crate::engine::Control;
use crate::events::{Event, EventSink, WatchlistSource};
use crate::shutdown::Shutdown;
use crate::tracker::KnownMap;
use crate::watchlist::Agent;

use super::startup::engine_config;

/// The daemon's side of discovery: the refresh loop's results, applied to the engine like a
/// reload (merged with the listed agents), each change reported once.
pub(super) struct Discovering {
    updates: Option<watch::Receiver<Option<Arc<Discovered>>>>,
    /// Uuids with a persisted status but not listed, until the first result is applied.
    held: Vec<AgentUuid>,
    /// The last result applied.
    pub(super) last: Option<Arc<Discovered>>,
}

impl Discovering {
    /// Starts the refresh loop on `shutdown`'s tracker when `[discovery]` is on.
    pub(super) fn start(
        settings: &Settings,
        client: Option<Client>,
        held: KnownMap,
        control: &tokio::sync::mpsc::UnboundedSender<Control>,
        sink: Arc<dyn EventSink>,
        shutdown: &Shutdown,
    ) -> Discovering {
        let held_uuids: Vec<AgentUuid> = held.keys().copied().collect();
        if !held.is_empty() {
            // Queued before the engine runs: it knows them before any result arrives.
            let _ = control.send(Control::Seed { known: held });
        }
        let updates = match client {
            Some(client) if settings.discovery.enabled => {
                let (tx, rx) = watch::channel(None);
                let discovery = Discovery::new(
                    client,
                    settings.discovery.clone(),
                    settings.api.requests_per_second,
                );
                shutdown.spawn(discovery::refresh::run(
                    discovery,
                    tx,
                    sink,
                    shutdown.token(),
                ));
                Some(rx)
            }
            _ => None,
        };
        Discovering {
            updates,
            held: held_uuids,
            last: None,
        }
    }

    /// Sends each complete pass to `to`, tagged `index`, until discovery or the daemon
    /// stops (one channel for all accounts' discoveries, so the daemon waits on one).
    pub(super) fn forward(
        &mut self,
        index: usize,
        to: tokio::sync::mpsc::UnboundedSender<(usize, Arc<Discovered>)>,
        shutdown: &Shutdown,
    ) {
        let Some(mut rx) = self.updates.take() else {
            return;
        };
        let token = shutdown.token();
        shutdown.spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    changed = rx.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let found = rx.borrow_and_update().clone();
                        if let Some(found) = found
                            && to.send((index, found)).is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
    }

    /// Applies `found` (merged with `listed`) unless it equals the last one applied.
    pub(super) async fn apply(
        &mut self,
        found: Arc<Discovered>,
        listed: &[Agent],
        current: &Settings,
        control: &tokio::sync::mpsc::UnboundedSender<Control>,
        sink: &dyn EventSink,
    ) {
        if self
            .last
            .as_deref()
            .is_some_and(|last| discovery::same_list(last, &found))
        {
            return;
        }
        let agents = discovery::merge(listed, &found.agents);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = control.send(Control::Reload {
            agents,
            config: engine_config(current, false),
            reply,
        });
        if let (Ok(()), Ok((agents, added, removed))) = (sent, answer.await) {
            sink.emit(&Event::WatchlistLoaded {
                agents,
                added,
                removed,
                source: WatchlistSource::Discovery,
                skipped: found.skipped,
            });
            self.last = Some(found);
            if !self.held.is_empty() {
                // Seeded at start and not found now: forgotten, as a reload forgets.
                let _ = control.send(Control::Forget {
                    uuids: std::mem::take(&mut self.held),
                });
            }
        }
    }
}
