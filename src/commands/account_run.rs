//! One account's share of the running daemon ([`AccountRun`]): its client and credentials
//! refresher, its engine built from its watchlist with its state file streamed in, its
//! inventory file, and its discovery; and how a reload reaches it. `run` owns the accounts
//! and the service-manager side.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::agent_uuid::AgentUuid;
use crate::api::Client;
use crate::config::Settings;
use crate::config::accounts::AccountPlan;
use crate::discovery::{self, Discovered};
use crate::engine::{Control, Engine, EngineReport, EngineStatus, InventoryOptions};
use crate::events::{Event, EventSink, WatchlistSource};
use crate::inventory::store::{InventoryFile, InventoryMap};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::state::{self, SetAside, StateError, StateFile};
use crate::tracker::KnownMap;
use crate::watchlist::{Agent, Watchlist};

use super::CommandError;
use super::discovering::Discovering;
use super::reload::apply_reload;
use super::startup::{self, engine_config};

/// One account's share of the daemon: its own engine (limiters, rate control, credentials
/// gate, client), state file, discovery and listed agents. Accounts share only the event
/// sink, the metrics registry and the shutdown.
pub(super) struct AccountRun {
    /// `default` or the `[[account]]` name.
    pub(super) name: String,
    /// The settings this account runs with (shared ones + its own).
    pub(super) settings: Settings,
    /// The shared sink, marking this account's events when there are several.
    pub(super) sink: Arc<dyn EventSink>,
    /// Reloads, seeds and forgets for its engine.
    pub(super) control: tokio::sync::mpsc::UnboundedSender<Control>,
    pub(super) discovery: Discovering,
    /// The listed agents, kept only while discovery needs them to merge with.
    pub(super) listed: Vec<Agent>,
    pub(super) status: Arc<EngineStatus>,
    /// Built, not yet running (until the signal handlers are in place).
    pub(super) engine: Option<Engine<Client>>,
    /// Running.
    pub(super) task: Option<tokio::task::JoinHandle<(Engine<Client>, EngineReport)>>,
}

impl AccountRun {
    /// Loads its state, connects its client (starting its credentials refresher), builds
    /// its engine and starts its discovery, whose results go to `found` tagged `index`.
    pub(super) async fn start(
        index: usize,
        plan: AccountPlan,
        watchlist: Watchlist,
        sink: Arc<dyn EventSink>,
        metrics: Option<&Arc<Metrics>>,
        shutdown: &Shutdown,
        found: &tokio::sync::mpsc::UnboundedSender<(usize, Arc<Discovered>)>,
    ) -> Result<AccountRun, CommandError> {
        let settings = plan.settings;
        let state_file = StateFile::for_account(&settings.state_dir, &plan.name);
        let (control, control_rx) = tokio::sync::mpsc::unbounded_channel();
        let connected = startup::connect(
            &settings,
            &crate::credentials::Environment::from_process(),
            shutdown,
        )
        .await?;
        // Discovery sends through its own clone of the client (same credentials, its own
        // limiter).
        let discovery_client = connected.client.clone();
        // The state file is streamed into the engine's table (issue 13: no map of 100k
        // statuses beside it). Discovered agents are not known until the first discovery:
        // their persisted statuses are held and seeded into the engine (kept and saved, not
        // polled) instead of being forgotten by an engine that starts with the listed ones;
        // from the first discovery on, those it does not remember are forgotten.
        let discovering = settings.discovery.enabled;
        let mut held = KnownMap::new();
        // Discovery merges each of its results with the listed agents: only then are they
        // kept; otherwise the engine's compact table is their only copy (issue 13).
        let listed = if discovering {
            watchlist.agents.clone()
        } else {
            Vec::new()
        };
        let (engine, loaded) = startup::engine_loading(
            connected,
            &settings,
            watchlist.agents,
            sink.clone(),
            |seed| {
                // The watchlist's agents are in the table and freed by now.
                release_freed_memory();
                state_file.load_each(&mut |uuid, known| {
                    if let Some(known) = seed(uuid, known)
                        && discovering
                    {
                        held.insert(uuid, known);
                    }
                })
            },
            false,
        );
        if let Err(error) = loaded {
            // Nothing of it was kept (the engine forgot what it had read): fresh start.
            held.clear();
            keep_damaged(&state_file, error, sink.as_ref())?;
        }
        let engine = engine.with_state(state_file).with_control(control_rx);
        let engine = match metrics {
            Some(registry) => engine.with_metrics(registry.clone()),
            None => engine,
        };
        let (file, mut stored) = load_inventory(&settings, &plan.name, sink.as_ref())?;
        // As for statuses: only discovery may bring back an agent not listed now, so without
        // it an unlisted agent's inventory is forgotten at once.
        if !discovering {
            stored.retain(|uuid, _| AgentUuid::parse(uuid).is_ok_and(|u| engine.watches(&u)));
        }
        let engine = engine.with_inventory(
            InventoryOptions::from_settings(&settings.api, &settings.inventory),
            stored,
            file,
        );
        let mut discovery = Discovering::start(
            &settings,
            &plan.name,
            Some(discovery_client),
            held,
            &control,
            sink.clone(),
            shutdown,
        )?;
        discovery.forward(index, found.clone(), shutdown);
        Ok(AccountRun {
            name: plan.name,
            status: engine.status(),
            settings,
            sink,
            control,
            discovery,
            listed,
            engine: Some(engine),
            task: None,
        })
    }

    /// Agents watched now (the engine's own count until it runs, then its heartbeat's).
    pub(super) fn agent_count(&self) -> usize {
        match &self.engine {
            Some(engine) => engine.agent_count(),
            None => self.status.agents.load(Ordering::Relaxed) as usize,
        }
    }

    /// Starts the engine on `shutdown`'s tracker.
    pub(super) fn spawn(&mut self, shutdown: &Shutdown) {
        if let Some(engine) = self.engine.take() {
            self.task = Some(shutdown.spawn(engine.run(shutdown.token())));
        }
    }

    /// Applies a reloaded config's view of this account, or keeps what runs and says why.
    pub(super) async fn reload(&mut self, new: Settings, new_listed: Vec<Agent>) {
        let (settings, not_applied) = apply_reload(&self.settings, new);
        // The file dropped `watchlist` because it turns [discovery] on, which waits for a
        // restart: applied now, the watchlist would be empty and every agent would stop.
        if settings.watchlist_path.is_none() && !settings.discovery.enabled {
            self.sink.emit(&Event::ConfigRejected {
                error_message: "`watchlist` may be left out only while [discovery] runs, and \
                                turning [discovery] on takes a restart: keep `watchlist` until \
                                then, or restart the daemon"
                    .to_owned(),
            });
            return;
        }
        if !not_applied.is_empty() {
            tracing::warn!(
                account = %self.name,
                "reload: {} take effect at the next restart; the watchlist, rate and intervals apply now",
                not_applied.join(", ")
            );
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        // Discovered agents stay across a reload: the file only changes what is listed.
        let sent = self.control.send(Control::Reload {
            agents: discovery::agents_to_watch(&new_listed, self.discovery.last.as_deref()),
            config: engine_config(&settings, false),
            removed: crate::engine::Removed::Forget,
            reply,
        });
        // After the watchlist: agents added by it get their rescan slot in the new interval too.
        let _ = self
            .control
            .send(Control::Inventory(InventoryOptions::from_settings(
                &settings.api,
                &settings.inventory,
            )));
        if let (Ok(()), Ok((agents, added, removed))) = (sent, answer.await) {
            self.sink.emit(&Event::WatchlistLoaded {
                agents,
                added,
                removed,
                source: WatchlistSource::Watchlist,
                skipped: 0,
            });
            if settings.discovery.enabled {
                self.listed = new_listed;
            }
            self.settings = settings;
        }
    }
}

/// A state file that could not be read (once `state_dir` proved usable,
/// [`state::prepare_dir`]) is kept under another name, reported (`state_damaged` with
/// `moved_to`), and the daemon starts fresh rather than refusing to run; only a `state_dir`
/// that cannot be used, or such a file that cannot be kept, stops it.
fn keep_damaged(
    state: &StateFile,
    error: StateError,
    sink: &dyn EventSink,
) -> Result<(), StateError> {
    let moved_to = state.set_aside()?;
    sink.emit(&Event::StateDamaged {
        path: state::shown(state.path()),
        error_message: error.to_string(),
        moved_to: state::shown(&moved_to),
    });
    Ok(())
}

/// The inventory file and the snapshots it holds, when `[inventory]` is enabled (else none:
/// status-only mode reads and writes nothing more). A file that cannot be read is handled
/// as the state file is: kept under another name, reported, and the inventory starts empty.
fn load_inventory(
    settings: &Settings,
    account: &str,
    sink: &dyn EventSink,
) -> Result<(Option<InventoryFile>, InventoryMap), StateError> {
    if !settings.inventory.enabled {
        return Ok((None, InventoryMap::new()));
    }
    let file = InventoryFile::for_account(&settings.state_dir, account);
    let (stored, set_aside) = file.load_keeping_damaged()?;
    if let Some(SetAside { error, moved_to }) = set_aside {
        sink.emit(&Event::StateDamaged {
            path: state::shown(file.path()),
            error_message: error.to_string(),
            moved_to: state::shown(&moved_to),
        });
    }
    Ok((Some(file), stored))
}

/// Hands the heap's free pages back to the system once start-up is over. The watchlist's text
/// and parse, the state file's and the watchlist itself are freed by now, but glibc keeps
/// freed memory below the heap's top mapped: at 100,000 agents that is RSS for nothing for the
/// daemon's whole life (issue 13). The peak (`VmHWM`) is not changed by this.
pub(super) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only returns free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
