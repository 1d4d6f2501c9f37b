//! How every polling command starts, in one place: config and watchlist loaded (all problems
//! of both at once), logging set up, credentials resolved, the signed client connected (with
//! the CVM-role refresher on the [`Shutdown`]'s tracker), the engine built.
//!
//! `run` and `once` differ only in what they add to the engine afterwards (state, control
//! channel, which events reach the log); `check` and `status` use the loading half alone.

use std::path::Path;
use std::sync::Arc;

use crate::agent_uuid::AgentUuid;
use crate::api::{Client, ClientOptions};
use crate::config::accounts::AccountPlan;
use crate::config::{ConfigErrors, CredentialSettings, MetricsSettings, Settings};
use crate::credentials::assume_role::{
    AssumeRole, AssumeRoleError, BaseCredentials, StsOptions, run_renewer,
};
use crate::credentials::cvm_role::{CvmRole, run_refresher};
use crate::credentials::{Credentials, Environment, Resolved, resolve};
use crate::engine::{Engine, EngineConfig};
use crate::events::EventSink;
use crate::logging;
use crate::metrics::{Metrics, MetricsServer};
use crate::problems::read_text;
use crate::scheduler::Intervals;
use crate::shutdown::Shutdown;
use crate::tls::TlsTrust;
use crate::tracker::{Known, KnownMap};
use crate::watchlist::{Agent, Watchlist};

use super::CommandError;

/// Loads the config and its watchlist, reporting the problems of both at once.
pub fn load(config: &Path) -> Result<(Settings, Watchlist), ConfigErrors> {
    let settings = Settings::load(config).map_err(|mut problems| {
        add_watchlist_problems(config, &mut problems);
        problems
    })?;
    let watchlist = watchlist_of(&settings)?;
    Ok((settings, watchlist))
}

/// The watchlist of one account's settings; empty with discovery alone.
fn watchlist_of(settings: &Settings) -> Result<Watchlist, ConfigErrors> {
    match &settings.watchlist_path {
        Some(path) => Watchlist::load(path),
        // Discovery alone: no file, nothing listed.
        None => Ok(Watchlist {
            path: std::path::PathBuf::new(),
            agents: Vec::new(),
            assigned: Vec::new(),
        }),
    }
}

/// Loads the config and every account's watchlist ([`Settings::account_plans`]), reporting
/// the problems of all of them at once.
pub fn load_accounts(
    config: &Path,
) -> Result<(Settings, Vec<(AccountPlan, Watchlist)>), ConfigErrors> {
    let settings = Settings::load(config).map_err(|mut problems| {
        add_watchlist_problems(config, &mut problems);
        problems
    })?;
    let mut accounts = Vec::new();
    let mut problems: Option<ConfigErrors> = None;
    for plan in settings.account_plans() {
        match watchlist_of(&plan.settings) {
            Ok(watchlist) => accounts.push((plan, watchlist)),
            Err(more) => match &mut problems {
                Some(problems) => problems.merge(more),
                None => problems = Some(more),
            },
        }
    }
    if problems.is_none()
        && let Err(more) = assign_accounts(&mut accounts)
    {
        problems = Some(more);
    }
    match problems {
        Some(problems) => Err(problems),
        None => Ok((settings, accounts)),
    }
}

/// Moves each agent whose table says `account = "…"` to that account's list; an account
/// that is not configured, or an agent the account already lists, is a problem at the
/// value's line:column.
fn assign_accounts(accounts: &mut [(AccountPlan, Watchlist)]) -> Result<(), ConfigErrors> {
    let names: Vec<String> = accounts.iter().map(|(p, _)| p.name.clone()).collect();
    let mut problems = Vec::new();
    let mut moves: Vec<(usize, crate::watchlist::Agent)> = Vec::new();
    for (plan, watchlist) in accounts.iter_mut() {
        let assigned = std::mem::take(&mut watchlist.assigned);
        let mut leaving = std::collections::HashSet::new();
        for a in &assigned {
            if a.account == plan.name {
                continue;
            }
            let problem = |message: String| crate::problems::Problem {
                file: watchlist.path.clone(),
                line: Some(a.line),
                column: Some(a.column),
                message,
                kind: crate::problems::ProblemKind::Invalid,
            };
            match names.iter().position(|n| *n == a.account) {
                Some(to) => {
                    moves.push((to, watchlist.agents[a.index].clone()));
                    leaving.insert(a.index);
                }
                None => problems.push(problem(format!(
                    "`account` = \"{}\" is not a configured account (configured: {}): add an \
                     [[account]] with that name to the config, or correct the name",
                    a.account,
                    names.join(", ")
                ))),
            }
        }
        if !leaving.is_empty() {
            let mut index = 0;
            watchlist.agents.retain(|_| {
                index += 1;
                !leaving.contains(&(index - 1))
            });
        }
    }
    for (to, agent) in moves {
        let (plan, watchlist) = &mut accounts[to];
        if watchlist.agents.iter().any(|a| a.uuid == agent.uuid) {
            problems.push(crate::problems::Problem {
                file: watchlist.path.clone(),
                line: None,
                column: None,
                message: format!(
                    "agent {} is given to account {} by `account =` in another watchlist, and \
                     this watchlist of that account lists it too: keep one of the two",
                    agent.uuid, plan.name
                ),
                kind: crate::problems::ProblemKind::Invalid,
            });
        } else {
            watchlist.agents.push(agent);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors { problems })
    }
}

/// [`load`], then logging as the config asks: what a command that logs does first. Before
/// this, errors reach stderr only through `main`.
pub fn load_and_log(config: &Path) -> Result<(Settings, Watchlist), CommandError> {
    let (settings, watchlist) = load(config)?;
    logging::init(settings.log.format, &settings.log.level)?;
    Ok((settings, watchlist))
}

/// When the config is invalid, its watchlist may still be found (the `watchlist` key alone
/// read leniently): its problems are listed too, so one `check` shows everything to fix.
/// The config is read as [`Settings::load`] reads it, within the same size limit: it already
/// failed once, and may be anything (`/dev/zero` would otherwise be read until memory ran out).
pub fn add_watchlist_problems(config: &Path, problems: &mut ConfigErrors) {
    let Ok(text) = read_text(config, "") else {
        return;
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return;
    };
    let Some(name) = table.get("watchlist").and_then(|v| v.as_str()) else {
        return;
    };
    let path = config.parent().unwrap_or(Path::new(".")).join(name);
    if path.is_file()
        && let Err(more) = Watchlist::load(&path)
    {
        problems.merge(more);
    }
}

/// The engine's settings from the config (also what a reload sends the running engine).
pub fn engine_config(settings: &Settings, once: bool) -> EngineConfig {
    EngineConfig {
        requests_per_second: settings.api.requests_per_second,
        max_in_flight: settings.api.max_in_flight,
        intervals: Intervals {
            settled: settings.poll.interval,
            collecting: settings.poll.collecting_interval,
            offline: settings.poll.offline_interval,
        },
        once,
    }
}

/// The metrics listener and one registry handle per account in `accounts` (their series
/// labelled `account`), or a single unlabelled handle when `accounts` is empty.
pub async fn metrics(
    settings: &MetricsSettings,
    accounts: &[&str],
) -> Result<Option<(Vec<Arc<Metrics>>, MetricsServer)>, CommandError> {
    let Some(addr) = settings.listen else {
        return Ok(None);
    };
    let server = MetricsServer::bind(addr).await?;
    tracing::info!(
        "serving metrics on http://{}/metrics",
        server.local_addr().unwrap_or(addr)
    );
    let handles = Metrics::for_accounts(settings.per_agent, accounts)
        .into_iter()
        .map(Arc::new)
        .collect();
    Ok(Some((handles, server)))
}

/// A signed client and where its credentials come from.
pub struct Connected {
    /// The client.
    pub client: Client,
    /// The credential source, for `credentials_failed`.
    pub source: String,
    /// Wakes the CVM-role refresher early (on `AuthFailure.TokenFailure`); `None` for
    /// static credentials.
    pub refresh: Option<Arc<tokio::sync::Notify>>,
}

/// A signed client for the settings, with credentials from the chain. CVM-role credentials
/// are fetched once here (so a broken metadata service fails start-up with a clear error),
/// then refreshed before expiry by a task on `shutdown`'s tracker that stops with it.
pub async fn connect(
    settings: &Settings,
    env: &Environment,
    shutdown: &Shutdown,
) -> Result<Connected, CommandError> {
    let options = ClientOptions {
        endpoint: settings.api.endpoint.clone(),
        region: settings.api.region.clone(),
        timeout: settings.api.timeout,
        // Every lane's budget, not one: each lane fills its own (issue 20).
        max_idle_connections: settings.api.in_flight_total(),
    };
    // One trust for every client of this account: the system's CAs and `[api] ca_file`.
    let trust = TlsTrust::with_ca_file(settings.api.ca_file.clone());
    match resolve(&settings.credentials, env)? {
        Resolved::Static(creds, source) => {
            tracing::debug!(source = %source, "credentials found");
            Ok(Connected {
                client: Client::for_api(options, creds, &trust, settings.api.service)?,
                source: source.to_string(),
                refresh: None,
            })
        }
        Resolved::CvmRole {
            role,
            metadata_endpoint,
        } => {
            // Reached by the chain only when every other source was empty: say so, or an
            // operator off-CVM reads a metadata-service error and wonders why it was asked.
            let by_chain = settings.credentials == CredentialSettings::Chain;
            let failed = |e| {
                if by_chain {
                    CommandError::CvmRoleFallback(e)
                } else {
                    CommandError::CvmRole(e)
                }
            };
            let cvm = CvmRole::with_trust(metadata_endpoint, role, &trust).map_err(failed)?;
            let first = cvm.fetch().await.map_err(failed)?;
            let source = format!("CVM instance role {}", first.role);
            let client = Client::for_api(options, first.credentials, &trust, settings.api.service)?;
            Ok(refreshed(client, source, shutdown, |update, refresh| {
                run_refresher(cvm, update, refresh, shutdown.token())
            }))
        }
        Resolved::AssumeRole {
            base,
            base_settings,
            request,
        } => {
            let failed = CommandError::AssumeRole;
            let base_source = match &*base {
                Resolved::Static(_, source) => source.to_string(),
                _ => "the CVM instance role".to_owned(),
            };
            let base = match (*base, *base_settings) {
                (
                    Resolved::CvmRole {
                        role,
                        metadata_endpoint,
                    },
                    _,
                ) => BaseCredentials::CvmRole(
                    CvmRole::with_trust(metadata_endpoint, role, &trust)
                        .map_err(|e| failed(AssumeRoleError::BaseCvmRole(e)))?,
                ),
                (_, settings) => BaseCredentials::Reread {
                    settings,
                    env: env.clone(),
                },
            };
            let sts = StsOptions {
                endpoint: settings.api.sts_endpoint.clone(),
                region: settings.api.region.clone(),
                timeout: settings.api.timeout,
            };
            let role = AssumeRole::with_trust(request, sts, base, &trust).map_err(failed)?;
            // Fetched once here, so that a refused role fails start-up with a clear error.
            let first = role.fetch().await.map_err(failed)?;
            let source = format!(
                "STS AssumeRole of {} on base credentials from {base_source}",
                role.request().role_arn
            );
            tracing::debug!(
                source = %source,
                secret_id = %crate::credentials::masked_secret_id(&first.credentials.secret_id),
                expires_at = first.expires_at,
                "credentials assumed"
            );
            let client = Client::for_api(options, first.credentials, &trust, settings.api.service)?;
            Ok(refreshed(client, source, shutdown, |update, refresh| {
                run_renewer(
                    role,
                    Some(first.expires_at),
                    update,
                    refresh,
                    shutdown.token(),
                )
            }))
        }
    }
}

/// Credentials handed to `client` whenever they change.
type OnUpdate = Box<dyn Fn(Credentials) + Send + Sync>;

/// `client` with temporary credentials that `refresher` (given where to hand new ones and the
/// wake-up the engine rings on `AuthFailure.TokenFailure`) keeps fresh on `shutdown`'s tracker.
fn refreshed<F>(
    client: Client,
    source: String,
    shutdown: &Shutdown,
    refresher: impl FnOnce(OnUpdate, Arc<tokio::sync::Notify>) -> F,
) -> Connected
where
    F: Future<Output = ()> + Send + 'static,
{
    let refresh = Arc::new(tokio::sync::Notify::new());
    let updated = client.clone();
    shutdown.spawn(refresher(
        Box::new(move |c| updated.set_credentials(c)),
        refresh.clone(),
    ));
    Connected {
        client,
        source,
        refresh: Some(refresh),
    }
}

/// The engine for `agents`, polling through a freshly [`connect`]ed client. `known` holds
/// statuses persisted by an earlier run; `once` stops it after one answer per agent.
pub async fn engine(
    settings: &Settings,
    agents: &[Agent],
    sink: Arc<dyn EventSink>,
    known: KnownMap,
    once: bool,
    shutdown: &Shutdown,
) -> Result<Engine<Client>, CommandError> {
    let connected = connect(settings, &Environment::from_process(), shutdown).await?;
    Ok(engine_for(connected, settings, agents, sink, known, once))
}

/// [`engine`] with a client already [`connect`]ed (when the caller needs the client too:
/// discovery sends through its own clone).
pub fn engine_for(
    connected: Connected,
    settings: &Settings,
    agents: &[Agent],
    sink: Arc<dyn EventSink>,
    known: KnownMap,
    once: bool,
) -> Engine<Client> {
    let load = |seed: &mut dyn FnMut(AgentUuid, Known) -> Option<Known>| {
        for (uuid, k) in known {
            // Agents not watched are forgotten.
            let _not_watched = seed(uuid, k);
        }
        Ok::<(), std::convert::Infallible>(())
    };
    match engine_loading(connected, settings, agents.iter(), sink, load, once) {
        (engine, Ok(())) => engine,
    }
}

/// [`engine_for`] with the persisted statuses streamed in by `load` (see
/// [`Engine::loading`]): its error, if any, comes back beside the engine.
pub fn engine_loading<E, A: std::borrow::Borrow<Agent>>(
    connected: Connected,
    settings: &Settings,
    agents: impl IntoIterator<Item = A, IntoIter: ExactSizeIterator>,
    sink: Arc<dyn EventSink>,
    load: impl FnOnce(&mut dyn FnMut(AgentUuid, Known) -> Option<Known>) -> Result<(), E>,
    once: bool,
) -> (Engine<Client>, Result<(), E>) {
    let (engine, loaded) = Engine::loading(
        connected.client,
        sink,
        engine_config(settings, once),
        agents,
        load,
    );
    let mut engine = engine.with_credential_source(connected.source);
    // `cwp`: statuses come from listing the account's machines in its region.
    if settings.api.service == crate::api::ApiService::Cwp
        && let Some(region) = settings.api.region.as_deref()
    {
        engine = engine.with_cwp_listings(crate::engine::cwp_listings(region));
    }
    if let Some(refresh) = connected.refresh {
        engine = engine.with_credentials_refresh(refresh);
    }
    (engine, loaded)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A metadata service with one role whose credentials are valid for two hours.
    async fn fake_metadata() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split(' ').nth(1).unwrap_or("");
                let expires = time::OffsetDateTime::now_utc().unix_timestamp() + 7200;
                let body = if path.ends_with("/security-credentials/") {
                    "cwp-role\n".to_owned()
                } else {
                    format!(
                        r#"{{"TmpSecretId":"AKIDtmp","TmpSecretKey":"k","Token":"t","ExpiredTime":{expires},"Expiration":"2030-01-01T00:00:00Z","Code":"Success"}}"#
                    )
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        format!("http://{addr}/latest/meta-data/")
    }

    #[tokio::test]
    async fn the_cvm_role_refresher_is_tracked_and_stops_with_the_shutdown() {
        let endpoint = fake_metadata().await;
        let settings = Settings::from_toml_str(
            &format!(
                "watchlist = \"w.toml\"\nstate_dir = \"/tmp/x\"\n[credentials]\n\
                 source = \"cvm-role\"\nmetadata_endpoint = \"{endpoint}\"\n"
            ),
            Path::new("/etc/cwp/config.toml"),
        )
        .unwrap();
        let shutdown = Shutdown::new();
        let connected = connect(
            &settings,
            &Environment::from_pairs([("HOME", "/nonexistent")]),
            &shutdown,
        )
        .await
        .unwrap();
        assert_eq!(connected.source, "CVM instance role cwp-role");
        assert!(connected.refresh.is_some());
        assert_eq!(shutdown.tasks(), 1, "the refresher runs on the tracker");
        assert!(shutdown.clone().finish(Duration::from_secs(5)).await);
        assert_eq!(shutdown.tasks(), 0);
    }

    #[tokio::test]
    async fn a_failing_cvm_role_says_whether_the_chain_chose_it() {
        // Nothing listens on port 9 of loopback: connection refused at once.
        let explicit = Settings::from_toml_str(
            "watchlist = \"w.toml\"\nstate_dir = \"/tmp/x\"\n[credentials]\n\
             source = \"cvm-role\"\nmetadata_endpoint = \"http://127.0.0.1:9/\"\n",
            Path::new("/etc/cwp/config.toml"),
        )
        .unwrap();
        let shutdown = Shutdown::new();
        let error = connect(
            &explicit,
            &Environment::from_pairs([("HOME", "/nonexistent")]),
            &shutdown,
        )
        .await
        .err()
        .expect("nothing to fetch from");
        assert!(matches!(error, CommandError::CvmRole(_)), "{error:?}");
        assert!(
            !error
                .to_string()
                .contains("so the CVM instance role was tried")
        );
        assert_eq!(shutdown.tasks(), 0);
    }

    fn assume_role_settings(sts_endpoint: &str) -> Settings {
        Settings::from_toml_str(
            &format!(
                "watchlist = \"w.toml\"\nstate_dir = \"/tmp/x\"\n[api]\n\
                 sts_endpoint = \"{sts_endpoint}\"\n[credentials]\nsource = \"assume-role\"\n\
                 base = \"env\"\nrole_arn = \"qcs::cam::uin/1:roleName/r\"\n\
                 role_session_name = \"s1\"\n"
            ),
            Path::new("/etc/cwp/config.toml"),
        )
        .unwrap()
    }

    fn base_env() -> Environment {
        Environment::from_pairs([
            ("HOME", "/nonexistent"),
            ("TENCENTCLOUD_SECRET_ID", cwp_simulator::DEFAULT_SECRET_ID),
            ("TENCENTCLOUD_SECRET_KEY", cwp_simulator::DEFAULT_SECRET_KEY),
        ])
    }

    #[tokio::test]
    async fn assume_role_fetches_at_start_and_tracks_its_renewer() {
        let sim = cwp_simulator::RunningSimulator::start(
            cwp_simulator::SimulatorOptions::new(
                cwp_simulator::Scenario::from_toml_str("").unwrap(),
            ),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let shutdown = Shutdown::new();
        let connected = connect(
            &assume_role_settings(&sim.endpoint()),
            &base_env(),
            &shutdown,
        )
        .await
        .unwrap();
        assert_eq!(
            connected.source,
            "STS AssumeRole of qcs::cam::uin/1:roleName/r on base credentials from environment \
             (TENCENTCLOUD_SECRET_ID)"
        );
        assert_ne!(
            connected.client.secret_id(),
            cwp_simulator::DEFAULT_SECRET_ID
        );
        assert!(connected.refresh.is_some());
        assert_eq!(shutdown.tasks(), 1, "the renewer runs on the tracker");
        assert!(shutdown.clone().finish(Duration::from_secs(5)).await);
        assert_eq!(shutdown.tasks(), 0);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn an_unreachable_sts_fails_start_up_with_its_code() {
        let shutdown = Shutdown::new();
        let error = connect(
            &assume_role_settings("http://127.0.0.1:9"),
            &base_env(),
            &shutdown,
        )
        .await
        .err()
        .expect("nothing listens on port 9");
        assert_eq!(error.code(), "AssumeRoleError.Unavailable", "{error}");
        assert!(error.to_string().contains("qcs::cam::uin/1:roleName/r"));
        assert_eq!(shutdown.tasks(), 0);
    }
}
