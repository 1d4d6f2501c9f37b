//! The daemon's side of discovery ([`Discovering`]): the refresh loop's results for one
//! account, passed through the membership rule (an agent leaves only after `remove_after`
//! complete passes without it; what is known of it is kept for `forget_after`, see
//! [`crate::discovery::membership`]), merged with its listed agents and applied to its engine
//! like a reload; what the rule remembers is saved in the discovery file.

use std::sync::Arc;

use tokio::sync::watch;

use crate::api::Client;
use crate::config::Settings;
use crate::discovery::membership::{Membership, Rule};
use crate::discovery::remembered::DiscoveryFile;
use crate::discovery::{self, Discovered, Discovery};
use crate::engine::{Control, Removed};
use crate::events::{Event, EventSink, WatchlistSource};
use crate::shutdown::Shutdown;
use crate::state::{self, SetAside, StateError};
use crate::tracker::KnownMap;
use crate::watchlist::Agent;

use super::startup::engine_config;

/// The daemon's side of discovery: the refresh loop's results, applied to the engine like a
/// reload (merged with the listed agents), each change reported once.
pub(super) struct Discovering {
    updates: Option<watch::Receiver<Option<Arc<Discovered>>>>,
    /// Every machine found and not forgotten: who is missing, who left when.
    members: Membership,
    /// Where `members` is saved (none while discovery is off).
    file: Option<DiscoveryFile>,
    /// The last list applied (what was found, plus agents in their grace passes).
    pub(super) last: Option<Arc<Discovered>>,
}

impl Discovering {
    /// Starts the refresh loop on `shutdown`'s tracker when `[discovery]` is on, with what
    /// `account`'s discovery file remembers (a damaged one is set aside and reported, as the
    /// state file is; only one that cannot be set aside is an error).
    pub(super) fn start(
        settings: &Settings,
        account: &str,
        client: Option<Client>,
        held: KnownMap,
        control: &tokio::sync::mpsc::UnboundedSender<Control>,
        sink: Arc<dyn EventSink>,
        shutdown: &Shutdown,
    ) -> Result<Discovering, StateError> {
        let (members, file) = if settings.discovery.enabled {
            let file = DiscoveryFile::for_account(&settings.state_dir, account);
            let (mut members, set_aside) = file.load_keeping_damaged()?;
            members.keep_present_with_state(|uuid| held.contains_key(uuid));
            if let Some(SetAside { error, moved_to }) = set_aside {
                sink.emit(&Event::StateDamaged {
                    path: state::shown(file.path()),
                    error_message: error.to_string(),
                    moved_to: state::shown(&moved_to),
                });
            }
            (members, Some(file))
        } else {
            (Membership::default(), None)
        };
        if !held.is_empty() {
            // Queued before the engine runs: it knows them before any result arrives.
            let _ = control.send(Control::Seed { known: held });
        }
        let updates = match client {
            Some(client) if settings.discovery.enabled => {
                let (tx, rx) = watch::channel(None);
                if settings.api.service == crate::api::ApiService::Cwp {
                    // Its status lane pages `cwp` DescribeMachines too: discovery takes its
                    // share of the action's rate (`discovery::cwp`).
                    let rate =
                        discovery::cwp::discovery_share(settings.api.rate_of("DescribeMachines"));
                    let discovery = Discovery::new(
                        discovery::cwp::CwpMachines(client),
                        settings.discovery.clone(),
                        rate,
                    );
                    shutdown.spawn(discovery::refresh::run(
                        discovery,
                        tx,
                        sink,
                        shutdown.token(),
                    ));
                } else {
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
                }
                Some(rx)
            }
            _ => None,
        };
        Ok(Discovering {
            updates,
            members,
            file,
            last: None,
        })
    }

    /// Nothing yet: the stand-in of an account still retrying its start (no client, no file
    /// read; [`Discovering::start`] replaces it once the account has connected).
    pub(super) fn idle() -> Discovering {
        Discovering {
            updates: None,
            members: Membership::default(),
            file: None,
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

    /// Applies one complete pass: the membership rule says which agents to watch (applied,
    /// merged with `listed`, unless the same as the last list) and which of those not watched
    /// to remember; the engine forgets the state of every other agent it does not watch (the
    /// first pass after a start thus forgets seeded agents discovery does not know).
    pub(super) async fn apply(
        &mut self,
        found: Arc<Discovered>,
        listed: &[Agent],
        current: &Settings,
        control: &tokio::sync::mpsc::UnboundedSender<Control>,
        sink: &dyn EventSink,
    ) {
        let rule = Rule {
            remove_after: current.discovery.remove_after,
            forget_after: current.discovery.forget_after,
        };
        let outcome = self.members.pass(&found, crate::clock::unix_now(), rule);
        let watch = Arc::new(outcome.watch);
        let same = self
            .last
            .as_deref()
            .is_some_and(|last| discovery::same_list(last, &watch));
        if !same {
            let agents = discovery::merge(listed, &watch.agents);
            let (reply, answer) = tokio::sync::oneshot::channel();
            let sent = control.send(Control::Reload {
                agents,
                config: engine_config(current, false),
                // A machine that left may come back: it must then repeat no event.
                removed: Removed::Keep,
                reply,
            });
            // Either fails only when the engine has stopped: nothing left to apply to.
            if sent.is_err() {
                return;
            }
            let Ok((agents, added, removed)) = answer.await else {
                return;
            };
            sink.emit(&Event::WatchlistLoaded {
                agents,
                added,
                removed,
                source: WatchlistSource::Discovery,
                skipped: watch.skipped,
            });
            self.last = Some(watch);
        }
        let _ = control.send(Control::Retain {
            keep: self.members.uuids(),
        });
        if outcome.changed {
            self.save().await;
        }
    }

    /// Writes what the membership remembers (off the runtime's threads); a failure is logged
    /// and the next pass that changes something tries again.
    async fn save(&self) {
        let Some(file) = self.file.clone() else {
            return;
        };
        let bytes = file.encode(&self.members);
        let written = tokio::task::spawn_blocking(move || file.write(&bytes)).await;
        if let Ok(Err(e)) = written {
            tracing::error!(
                error_code = e.code(),
                "cannot write the discovery file: {e}"
            );
        }
    }
}
