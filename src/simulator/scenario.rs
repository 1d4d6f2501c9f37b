//! Scenario files: which agents the simulator knows, with which credentials, and what each agent
//! answers over time. Raw serde structs (with spans) are parsed first, then validated into
//! [`Scenario`], so that every error can point at a line and column and say what to write.

use std::ops::Range;
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::ScenarioError;
use super::{DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY};

/// The error code answered for a known agent before the first entry of its timeline (and for an
/// agent with an empty timeline): no open-port task exists yet, as for a real agent nobody has
/// created a task for.
pub const BEFORE_TIMELINE_ERROR: &str = "FailedOperation.OpenPortTaskNotFound";

static BEFORE_TIMELINE: LazyLock<ScriptedAnswer> =
    LazyLock::new(|| ScriptedAnswer::Error(BEFORE_TIMELINE_ERROR.to_owned()));

/// Everything the simulator answers from: credentials and per-agent timelines.
#[derive(Clone, PartialEq, Eq)]
pub struct Scenario {
    /// The SecretId the simulator accepts.
    pub secret_id: String,
    /// The SecretKey signatures must be made with.
    pub secret_key: String,
    /// Known agents; any other well-formed Uuid answers `ResourceNotFound`.
    pub agents: Vec<ScenarioAgent>,
}

// By hand so that the key never reaches a log, even though the default one is a documented test
// value: a scenario may carry a real-looking key.
impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("secret_id", &self.secret_id)
            .field("secret_key", &"<redacted>")
            .field("agents", &self.agents)
            .finish()
    }
}

/// One agent and what it answers over time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioAgent {
    /// The agent Uuid (8-4-4-4-12 hex), matched exactly.
    pub uuid: String,
    /// Entries sorted by `at`; the last one at or before "now" holds.
    pub timeline: Vec<TimelineEntry>,
}

/// From `at` (counted from the simulator's start) on, the agent answers `answer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    /// When this entry starts to hold.
    pub at: Duration,
    /// What `DescribeOpenPortTaskStatus` answers.
    pub answer: ScriptedAnswer,
}

/// A scripted answer of `DescribeOpenPortTaskStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptedAnswer {
    /// A success answer with this `Status` string.
    Status(String),
    /// An API error with this code (e.g. `FailedOperation.AgentOffline`).
    Error(String),
}

impl Default for Scenario {
    /// No agents, default credentials.
    fn default() -> Self {
        Scenario {
            secret_id: DEFAULT_SECRET_ID.to_owned(),
            secret_key: DEFAULT_SECRET_KEY.to_owned(),
            agents: Vec::new(),
        }
    }
}

impl Scenario {
    /// Parses and validates scenario TOML. Errors carry `scenario:line:column`.
    pub fn from_toml_str(text: &str) -> Result<Scenario, ScenarioError> {
        parse(text, "scenario")
    }

    /// Reads and parses a scenario file. Errors carry `path:line:column`.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        parse(&text, &path.display().to_string())
    }

    /// What agent `uuid` answers at `since_start`: the last entry at or before it.
    ///
    /// `None` when the Uuid is not in the scenario (the server answers `ResourceNotFound`).
    /// Before the agent's first entry, and for an empty timeline, the answer is the error
    /// [`BEFORE_TIMELINE_ERROR`] (no task yet). Works on unsorted timelines too (the fields are
    /// public, so a hand-built scenario may not be sorted): the greatest `at` not after
    /// `since_start` wins, and among equal ones the later entry.
    pub fn answer_at(&self, uuid: &str, since_start: Duration) -> Option<&ScriptedAnswer> {
        let agent = self.agents.iter().find(|a| a.uuid == uuid)?;
        Some(agent.answer_at(since_start))
    }
}

impl ScenarioAgent {
    /// See [`Scenario::answer_at`].
    pub fn answer_at(&self, since_start: Duration) -> &ScriptedAnswer {
        let mut best: Option<&TimelineEntry> = None;
        for entry in &self.timeline {
            if entry.at <= since_start && best.is_none_or(|b| entry.at >= b.at) {
                best = Some(entry);
            }
        }
        best.map_or(&*BEFORE_TIMELINE, |e| &e.answer)
    }
}

/// True for the `8-4-4-4-12` hex form CWP uses for agent Uuids (either case).
pub fn is_agent_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    secret_id: Option<Spanned<String>>,
    secret_key: Option<Spanned<String>>,
    #[serde(default)]
    agent: Vec<Spanned<RawAgent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    uuid: Spanned<String>,
    timeline: Spanned<Vec<Spanned<RawEntry>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    at: Spanned<String>,
    status: Option<Spanned<String>>,
    error: Option<Spanned<String>>,
}

fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
    let invalid = |span: Range<usize>, message: String| {
        let (line, column) = line_column(text, span.start);
        ScenarioError::Invalid {
            origin: origin.to_owned(),
            line,
            column,
            message,
        }
    };
    let raw: RawScenario = toml::from_str(text)
        .map_err(|e| invalid(e.span().unwrap_or(0..0), e.message().trim_end().to_owned()))?;

    let (secret_id, secret_key) = match (raw.secret_id, raw.secret_key) {
        (None, None) => (DEFAULT_SECRET_ID.to_owned(), DEFAULT_SECRET_KEY.to_owned()),
        (Some(id), Some(key)) => {
            if id.get_ref().trim().is_empty() || id.get_ref().contains(['/', ',', ' ']) {
                return Err(invalid(
                    id.span(),
                    "secret_id must be a non-empty SecretId without `/`, `,` or spaces, \
                     e.g. secret_id = \"AKIDexample\""
                        .to_owned(),
                ));
            }
            if key.get_ref().is_empty() {
                return Err(invalid(
                    key.span(),
                    "secret_key must not be empty: write secret_key = \"...\" or remove both \
                     secret_id and secret_key to use the default test credentials"
                        .to_owned(),
                ));
            }
            (id.into_inner(), key.into_inner())
        }
        (Some(one), None) | (None, Some(one)) => {
            return Err(invalid(
                one.span(),
                "set both secret_id and secret_key, or neither (then the documented test \
                 credentials are used)"
                    .to_owned(),
            ));
        }
    };

    let mut agents: Vec<ScenarioAgent> = Vec::with_capacity(raw.agent.len());
    let mut agent_spans: Vec<Range<usize>> = Vec::with_capacity(raw.agent.len());
    for raw_agent in raw.agent {
        let raw_agent = raw_agent.into_inner();
        let uuid_span = raw_agent.uuid.span();
        let uuid = raw_agent.uuid.into_inner();
        if !is_agent_uuid(&uuid) {
            return Err(invalid(
                uuid_span,
                format!(
                    "uuid {uuid:?} is not an agent Uuid: write 8-4-4-4-12 hex digits, \
                     e.g. uuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\""
                ),
            ));
        }
        if let Some(i) = agents.iter().position(|a| a.uuid == uuid) {
            let (first_line, _) = line_column(text, agent_spans[i].start);
            return Err(invalid(
                uuid_span,
                format!(
                    "uuid {uuid:?} is already used on line {first_line}: \
                     give each agent one [[agent]] table"
                ),
            ));
        }

        let mut timeline: Vec<(Range<usize>, TimelineEntry)> = Vec::new();
        for raw_entry in raw_agent.timeline.into_inner() {
            let entry_span = raw_entry.span();
            let raw_entry = raw_entry.into_inner();
            let at = humantime::parse_duration(raw_entry.at.get_ref().trim()).map_err(|e| {
                invalid(
                    raw_entry.at.span(),
                    format!(
                        "at = {:?} is not a duration ({e}): write e.g. \"0s\", \"20s\", \"1m30s\"",
                        raw_entry.at.get_ref()
                    ),
                )
            })?;
            let answer = match (raw_entry.status, raw_entry.error) {
                (Some(status), None) => {
                    if status.get_ref().trim().is_empty() {
                        return Err(invalid(
                            status.span(),
                            "status must not be empty: write e.g. status = \"COMPLETE\"".to_owned(),
                        ));
                    }
                    ScriptedAnswer::Status(status.into_inner())
                }
                (None, Some(error)) => {
                    if error.get_ref().trim().is_empty() || error.get_ref().contains(' ') {
                        return Err(invalid(
                            error.span(),
                            "error must be an API error code: write e.g. \
                             error = \"FailedOperation.AgentOffline\""
                                .to_owned(),
                        ));
                    }
                    ScriptedAnswer::Error(error.into_inner())
                }
                (Some(_), Some(error)) => {
                    return Err(invalid(
                        error.span(),
                        "an entry has both status and error: keep exactly one of them".to_owned(),
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        entry_span,
                        "an entry needs status = \"COMPLETE\" (or another status) or \
                         error = \"FailedOperation.AgentOffline\" (or another error code)"
                            .to_owned(),
                    ));
                }
            };
            if let Some((first_span, _)) = timeline.iter().find(|(_, e)| e.at == at) {
                let (first_line, _) = line_column(text, first_span.start);
                return Err(invalid(
                    entry_span,
                    format!(
                        "two entries at {} (the other on line {first_line}): \
                         give each entry of a timeline its own `at`",
                        humantime::format_duration(at)
                    ),
                ));
            }
            timeline.push((entry_span, TimelineEntry { at, answer }));
        }
        timeline.sort_by_key(|(_, e)| e.at);
        agents.push(ScenarioAgent {
            uuid,
            timeline: timeline.into_iter().map(|(_, e)| e).collect(),
        });
        agent_spans.push(uuid_span);
    }

    Ok(Scenario {
        secret_id,
        secret_key,
        agents,
    })
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
secret_id = "AKIDtest"
secret_key = "keytest"

[[agent]]
uuid = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"
timeline = [
  { at = "45s", error = "FailedOperation.AgentOffline" },
  { at = "0s",  status = "COLLECTING" },
  { at = "20s", status = "COMPLETE" },
]

[[agent]]
uuid = "00000000-0000-4000-8000-000000000002"
timeline = [{ at = "5s", status = "FAILED" }]
"#;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn invalid_at(text: &str) -> (usize, usize, String) {
        match Scenario::from_toml_str(text) {
            Err(ScenarioError::Invalid {
                line,
                column,
                message,
                ..
            }) => (line, column, message),
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_spec_example_and_sorts_entries() {
        let s = Scenario::from_toml_str(GOOD).unwrap();
        assert_eq!(s.secret_id, "AKIDtest");
        assert_eq!(s.secret_key, "keytest");
        assert_eq!(s.agents.len(), 2);
        let ats: Vec<_> = s.agents[0].timeline.iter().map(|e| e.at).collect();
        assert_eq!(ats, vec![secs(0), secs(20), secs(45)]);
        assert_eq!(
            s.agents[0].timeline[2].answer,
            ScriptedAnswer::Error("FailedOperation.AgentOffline".into())
        );
    }

    #[test]
    fn credentials_default_to_the_documented_test_values() {
        let s = Scenario::from_toml_str("").unwrap();
        assert_eq!(s.secret_id, DEFAULT_SECRET_ID);
        assert_eq!(s.secret_key, DEFAULT_SECRET_KEY);
        assert!(s.agents.is_empty());
        assert!(!format!("{s:?}").contains(DEFAULT_SECRET_KEY));
    }

    #[test]
    fn answer_at_takes_the_last_entry_at_or_before_now() {
        let s = Scenario::from_toml_str(GOOD).unwrap();
        let u = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1";
        let status = |t| s.answer_at(u, t).cloned();
        assert_eq!(
            status(secs(0)),
            Some(ScriptedAnswer::Status("COLLECTING".into()))
        );
        assert_eq!(
            status(secs(19)),
            Some(ScriptedAnswer::Status("COLLECTING".into()))
        );
        assert_eq!(
            status(secs(20)),
            Some(ScriptedAnswer::Status("COMPLETE".into()))
        );
        assert_eq!(
            status(secs(3600)),
            Some(ScriptedAnswer::Error("FailedOperation.AgentOffline".into()))
        );
        assert_eq!(
            s.answer_at("00000000-0000-4000-8000-000000000009", secs(1)),
            None
        );
        // Before the first entry: no task yet.
        assert_eq!(
            s.answer_at("00000000-0000-4000-8000-000000000002", secs(4)),
            Some(&ScriptedAnswer::Error(BEFORE_TIMELINE_ERROR.into()))
        );
    }

    #[test]
    fn answer_at_copes_with_hand_built_unsorted_timelines() {
        let entry = |at, s: &str| TimelineEntry {
            at: secs(at),
            answer: ScriptedAnswer::Status(s.into()),
        };
        let s = Scenario {
            agents: vec![ScenarioAgent {
                uuid: "u".into(),
                timeline: vec![entry(10, "B"), entry(0, "A")],
            }],
            ..Scenario::default()
        };
        assert_eq!(
            s.answer_at("u", secs(5)),
            Some(&ScriptedAnswer::Status("A".into()))
        );
        assert_eq!(
            s.answer_at("u", secs(10)),
            Some(&ScriptedAnswer::Status("B".into()))
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_position() {
        let (line, col, msg) = invalid_at(
            "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntimeline = [{ at = \"0s\", stauts = \"X\" }]\n",
        );
        assert_eq!(line, 3);
        assert!(col > 1, "{col}");
        assert!(msg.contains("stauts"), "{msg}");
        let (line, _, msg) = invalid_at("secret_id = \"a\"\nsecret_key = \"b\"\nagents = []\n");
        assert_eq!(line, 3);
        assert!(msg.contains("agents"), "{msg}");
    }

    #[test]
    fn bad_durations_say_what_to_write() {
        let (line, col, msg) = invalid_at(
            "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntimeline = [\n  { at = \"soon\", status = \"X\" },\n]\n",
        );
        assert_eq!((line, col), (4, 10));
        assert!(msg.contains("\"20s\""), "{msg}");
    }

    #[test]
    fn each_entry_has_exactly_one_answer() {
        let head = "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n";
        let (line, _, msg) = invalid_at(&format!(
            "{head}timeline = [{{ at = \"0s\", status = \"A\", error = \"B\" }}]\n"
        ));
        assert_eq!(line, 3);
        assert!(msg.contains("exactly one"), "{msg}");
        let (line, _, msg) = invalid_at(&format!("{head}timeline = [{{ at = \"0s\" }}]\n"));
        assert_eq!(line, 3);
        assert!(msg.contains("status = "), "{msg}");
        let (_, _, msg) = invalid_at(&format!(
            "{head}timeline = [{{ at = \"1s\", status = \"A\" }},\n {{ at = \"1000ms\", status = \"B\" }}]\n"
        ));
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn bad_and_duplicate_uuids_are_rejected() {
        let (line, col, msg) = invalid_at("[[agent]]\nuuid = \"web-01\"\ntimeline = []\n");
        assert_eq!((line, col), (2, 8));
        assert!(msg.contains("8-4-4-4-12"), "{msg}");
        let one = "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntimeline = []\n";
        let (line, _, msg) = invalid_at(&format!("{one}{one}"));
        assert_eq!(line, 5);
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn missing_timeline_and_half_credentials_are_rejected() {
        let (line, _, msg) =
            invalid_at("[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n");
        assert_eq!(line, 1);
        assert!(msg.contains("timeline"), "{msg}");
        let (line, _, msg) = invalid_at("\nsecret_id = \"AKIDx\"\n");
        assert_eq!(line, 2);
        assert!(msg.contains("both"), "{msg}");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let (line, _, _) = invalid_at("secret_id = \"a\"\nsecret_key = \n");
        assert_eq!(line, 2);
        let err = Scenario::from_toml_str("x = [").unwrap_err();
        assert_eq!(err.code(), "scenario_invalid");
        assert!(err.to_string().starts_with("scenario:1:"), "{err}");
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncé d", 6), (2, 3));
        assert_eq!(line_column("", 10), (1, 1));
    }

    #[test]
    fn uuid_format() {
        assert!(is_agent_uuid("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"));
        assert!(is_agent_uuid("6B6CD843-6BC1-4011-A74C-DC3FD26A7DD1"));
        assert!(!is_agent_uuid("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd"));
        assert!(!is_agent_uuid("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1-"));
        assert!(!is_agent_uuid("6b6cd843x6bc1-4011-a74c-dc3fd26a7dd1"));
        assert!(!is_agent_uuid("g b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"));
        assert!(!is_agent_uuid(""));
    }
}
