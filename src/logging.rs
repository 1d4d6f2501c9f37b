//! How events reach people and programs: readable text, JSON lines, or the journal.
//!
//! One function, [`init`], installs the subscriber for the chosen [`LogFormat`]. Text and
//! JSON are rendered by [`LineLayer`] (one line per event: `timestamp`, `level`, `event`, then
//! the event's fields as top-level keys); the journal gets native entries through
//! `tracing-journald` with field names upper-cased and no prefix, so `MESSAGE_ID` is real.
//!
//! Values are hostile (an API `Message`, a `RequestId`, a path): text lines escape every
//! control character of every part ([`crate::escape`]), so one record is one line and no ANSI
//! reaches a terminal; JSON lines are written by [`escape::json_line`] (C0 escaped by
//! `serde_json`, DEL, C1, U+2028/9 and bidi controls as `\uXXXX`: the same value). Journal
//! fields, `MESSAGE` included, are left raw: the journal is binary-safe and its consumers read
//! fields, not lines, so the exact API value stays searchable. A multi-line `MESSAGE` is one
//! entry, which `journalctl` shows with its further lines indented under the entry's prefix
//! (it cannot pass for another entry), and a `MESSAGE` with other control characters is shown
//! as `[N blob data]` unless `journalctl --all` is asked for.
//!
//! Only our own crate logs below `warn`: HTTP libraries at `trace` print request headers, and
//! `X-TC-Token` is a secret.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;
use crate::escape::{self, Escaped, escape};

/// The format actually used after resolving `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
    /// Native journal protocol.
    Journald,
}

/// Errors setting up logging.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The journal socket is not there.
    #[error("cannot connect to the journal: {0}")]
    Journal(std::io::Error),
    /// Bad level.
    #[error("invalid log level {0:?}: use trace, debug, info, warn or error")]
    Level(String),
}

impl LoggingError {
    /// Stable machine-readable code, for `error_code` log fields and scripts.
    pub fn code(&self) -> &'static str {
        match self {
            LoggingError::Journal(_) => "LoggingError.Journal",
            LoggingError::Level(_) => "LoggingError.Level",
        }
    }
}

/// Is stderr connected to the journal? systemd says so in `$JOURNAL_STREAM` (`dev:ino` of the
/// stream it gave us); a program merely started from a shell on a journald host is not.
pub fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat on fd 2 with a zeroed, correctly sized stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

/// Resolves `auto`.
pub fn resolve(format: LogFormat) -> Output {
    match format {
        LogFormat::Text => Output::Text,
        LogFormat::Json => Output::Json,
        LogFormat::Journald => Output::Journald,
        LogFormat::Auto if stderr_is_journal() => Output::Journald,
        LogFormat::Auto if std::io::stderr().is_terminal() => Output::Text,
        LogFormat::Auto => Output::Json,
    }
}

fn filter(level: &str) -> Result<EnvFilter, LoggingError> {
    let level = level.trim().to_ascii_lowercase();
    if !["trace", "debug", "info", "warn", "error"].contains(&level.as_str()) {
        return Err(LoggingError::Level(level));
    }
    Ok(EnvFilter::new(format!("warn,cwp_portwatch={level}")))
}

/// Installs the global subscriber. Call once, early in `main`.
pub fn init(format: LogFormat, level: &str) -> Result<Output, LoggingError> {
    init_with_filter(format, filter(level)?)
}

/// [`init`] with an explicit filter (the demo hides the simulator's request lines).
pub fn init_with_filter(format: LogFormat, filter: EnvFilter) -> Result<Output, LoggingError> {
    let output = resolve(format);
    let registry = tracing_subscriber::registry().with(filter);
    match output {
        Output::Journald => {
            let layer = tracing_journald::layer()
                .map_err(LoggingError::Journal)?
                .with_field_prefix(None)
                .with_syslog_identifier("cwp-portwatch".to_string());
            let _ = registry.with(layer).try_init();
        }
        Output::Text | Output::Json => {
            let _ = registry
                .with(LineLayer::new(output, Box::new(std::io::stderr())))
                .try_init();
        }
    }
    Ok(output)
}

/// Renders events as text or JSON lines to a writer.
pub struct LineLayer {
    output: Output,
    writer: Mutex<Box<dyn Write + Send>>,
}

impl LineLayer {
    /// A layer writing `output` lines to `writer`.
    pub fn new(output: Output, writer: Box<dyn Write + Send>) -> Self {
        LineLayer {
            output,
            writer: Mutex::new(writer),
        }
    }
}

#[derive(Default)]
struct Fields {
    map: Map<String, Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.map.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.map.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.map.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.map.insert(field.name().into(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.map.insert(field.name().into(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.map
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    now.format(&f).unwrap_or_default()
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for LineLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut map = fields.map;
        let level = level_name(event.metadata().level());
        let line = match self.output {
            Output::Json => {
                let mut out = Map::new();
                out.insert("timestamp".into(), Value::from(rfc3339_now()));
                out.insert("level".into(), Value::from(level));
                let name = map.remove("event").unwrap_or_else(|| Value::from("log"));
                out.insert("event".into(), name);
                if !map.contains_key("target")
                    && !event
                        .metadata()
                        .target()
                        .starts_with("cwp_portwatch::events")
                {
                    out.insert("target".into(), Value::from(event.metadata().target()));
                }
                out.extend(map);
                escape::json_line(&Value::Object(out))
            }
            _ => {
                let message = map
                    .remove("message")
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let name = map
                    .remove("event")
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| event.metadata().target().to_string());
                // The message already says who and what changed.
                for k in ["message_id", "agent_name", "from_status", "to_status"] {
                    map.remove(k);
                }
                let rest: Vec<String> = map
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| match v {
                        Value::String(s) => format!("{}={}", escape(k), escape(s)),
                        other => format!("{}={}", escape(k), escape(&other.to_string())),
                    })
                    .collect();
                // Every part is escaped: a value with `\n` or ESC (an API message, a
                // RequestId, a path) must not forge a record or paint the terminal.
                format!(
                    "{} {:>5} {:<18} {}{}{}",
                    rfc3339_now().get(11..23).unwrap_or_default(),
                    level.to_ascii_uppercase(),
                    Escaped(&name),
                    escape(&message),
                    if rest.is_empty() { "" } else { "  " },
                    rest.join(" ")
                )
            }
        };
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(w, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `output` renders for one hostile warning.
    fn render(output: Output) -> String {
        let buffer = Buffer::default();
        let layer = LineLayer::new(output, Box::new(buffer.clone()));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let hostile =
                "x\n00:00:00.000  INFO status_changed forged\u{1b}[31m\u{9b}\u{2028}\u{202e}";
            tracing::warn!(
                event = "poll_failed\n\u{1b}[2J",
                error_message = hostile,
                request_id = %hostile,
                detail = ?hostile,
                "poll failed with {hostile}"
            );
        });
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_text_record_is_one_line_without_control_characters() {
        let text = render(Output::Text);
        assert_eq!(text.lines().count(), 1, "{text:?}");
        let line = text.strip_suffix('\n').unwrap();
        assert!(!line.chars().any(escape::is_unsafe), "{line:?}");
        assert!(line.contains("poll_failed\\n\\u{1b}[2J"), "{line}");
        assert!(
            line.contains("error_message=x\\n00:00:00.000  INFO"),
            "{line}"
        );
        assert!(line.contains("request_id=x\\n"), "{line}");
        assert!(
            line.contains("\\u{1b}[31m\\u{9b}\\u{2028}\\u{202e}"),
            "{line}"
        );
    }

    #[test]
    fn a_json_record_is_one_line_with_the_values_unchanged() {
        let text = render(Output::Json);
        assert_eq!(text.lines().count(), 1, "{text:?}");
        let line = text.strip_suffix('\n').unwrap();
        assert!(!line.chars().any(escape::is_unsafe), "{line:?}");
        let value: Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            value["error_message"],
            "x\n00:00:00.000  INFO status_changed forged\u{1b}[31m\u{9b}\u{2028}\u{202e}"
        );
        assert_eq!(value["event"], "poll_failed\n\u{1b}[2J");
    }
}
