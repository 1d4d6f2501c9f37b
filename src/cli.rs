//! The command line, parsed by clap. Each command's work lives in its own module under
//! [`crate::commands`]; `main` only dispatches and maps their errors to exit codes.
//!
//! The hidden `generate` command writes the man pages and shell completions that the packages
//! ship (`scripts/package.sh`): `cwp-portwatch(1)` comes from this very definition, so it cannot
//! drift from the binary; `cwp-portwatch.toml(5)` is `packaging/cwp-portwatch.toml.5`, checked by
//! a unit test below against the keys the config parser accepts (`src/config/raw.rs`).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::config::DEFAULT_CONFIG_PATH;
use cwp_simulator::cli::SimulateArgs;

/// Watch Tencent Cloud CWP agents' open-port task status and log every change.
#[derive(Debug, Parser)]
#[command(name = "cwp-portwatch", version = VERSION, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--version`: the package version and the git commit it was built from, so an operator can
/// tell which build a host runs. `build.rs` sets the commit ("unknown" outside a git checkout).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CWP_PORTWATCH_GIT_COMMIT"),
    ")"
);

/// The config man page, section 5: written by hand because it explains each key, and kept
/// complete by the `config_page_documents_every_key` test.
pub const CONFIG_MAN_PAGE: &str = include_str!("../packaging/cwp-portwatch.toml.5");

/// Where the config file is.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// Config file.
    #[arg(long, env = "CWP_PORTWATCH_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

/// `check [--probe]`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Config.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Also, for every sink block: read its url_file and secret_file, resolve its host and
    /// connect to it (with the TLS handshake for https), sending nothing; one line per sink,
    /// exit 1 when any fails.
    #[arg(long)]
    pub probe: bool,
}

/// Output format of `once` and `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// One aligned line per agent.
    #[default]
    Text,
    /// One JSON object per agent and line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground until SIGTERM/SIGINT (SIGHUP reloads).
    Run(ConfigArg),
    /// Validate config, watchlist and credential sources without calling the API.
    Check(CheckArgs),
    /// Poll every watched agent once, print one line per agent.
    Once {
        /// Config.
        #[command(flatten)]
        config: ConfigArg,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Print the persisted last-known status of every agent of every account (listed and
    /// discovered), without calling the API.
    Status {
        /// Config.
        #[command(flatten)]
        config: ConfigArg,
        /// Only this account (`default`, or the `name` of one of the config's accounts).
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Print the stored open-port inventory of every account (listed and discovered
    /// agents), without calling the API.
    Ports {
        /// Config.
        #[command(flatten)]
        config: ConfigArg,
        /// Only this account (`default`, or the `name` of one of the config's accounts).
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
        /// Only this agent (its Uuid, watchlist name or discovered name).
        #[arg(long, value_name = "UUID|NAME")]
        agent: Option<String>,
        /// Only this port.
        #[arg(long, value_name = "N")]
        port: Option<u16>,
        /// Only ports the expected-ports policy (`[policy] file`) finds unexpected.
        #[arg(long)]
        unexpected: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// The expected-ports policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Serve the built-in CWP API simulator until stopped.
    Simulate(SimulateArgs),
    /// Run the daemon against the bundled simulator scenario for half a minute.
    Demo,
    /// Write man pages or shell completions into a folder (used to build the packages).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

/// `cwp-portwatch policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Evaluate the stored inventory of every account against the policy file, without
    /// calling the API; print every finding. Exit 0 when none, 1 when any, 2 when the config,
    /// the policy or an inventory file cannot be used.
    Test {
        /// Config.
        #[command(flatten)]
        config: ConfigArg,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

/// `generate WHAT DIR`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// What to write.
    #[arg(value_enum)]
    pub what: Generated,
    /// The folder to write into; created if missing. Existing files are never overwritten.
    pub dir: PathBuf,
}

/// What `generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generated {
    /// `cwp-portwatch.1`, one `cwp-portwatch-COMMAND.1` per command, `cwp-portwatch.toml.5`.
    Man,
    /// `cwp-portwatch.bash`, `_cwp-portwatch` (zsh) and `cwp-portwatch.fish`.
    Completions,
}

/// Why `generate` failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The output folder could not be created.
    #[error("cannot create {path}: {source}; choose a writable folder")]
    Folder {
        /// The folder, control characters escaped (`shown`).
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be written (it exists already, or the folder is not writable).
    #[error("cannot write {path}: {source}; generate into a new, empty folder")]
    Write {
        /// The file, control characters escaped (`shown`).
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl GenerateError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            GenerateError::Folder { .. } => "generate.folder",
            GenerateError::Write { .. } => "generate.write",
        }
    }
}

/// Writes what `args` asks for and returns the files written. Every file is created new
/// (`O_EXCL`, so never through a link a previous run or another user left) with mode 0644:
/// these are public package contents, not secrets.
pub fn generate(args: &GenerateArgs) -> Result<Vec<PathBuf>, GenerateError> {
    std::fs::create_dir_all(&args.dir).map_err(|source| GenerateError::Folder {
        path: shown(&args.dir),
        source,
    })?;
    let files = match args.what {
        Generated::Man => man_pages(),
        Generated::Completions => completions(),
    };
    let mut written = Vec::with_capacity(files.len());
    for (name, contents) in files {
        let path = args.dir.join(name);
        write_new(&path, &contents).map_err(|source| GenerateError::Write {
            path: shown(&path),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// `path` for a terminal: a control character in a name (a newline, an escape sequence) is
/// written as `\u{..}`, so an error line cannot be split or repaint the screen.
fn shown(path: &Path) -> String {
    path.to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Creates `path` (never existing before, never a link) and writes `contents` into it.
fn write_new(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// The man pages: the command's from the clap definition, the config file's from
/// [`CONFIG_MAN_PAGE`].
fn man_pages() -> Vec<(String, Vec<u8>)> {
    // Without clap's `help` subcommand: the page would list a cwp-portwatch-help(1) that does
    // not exist (`--help` is on every page).
    let cmd = Cli::command().disable_help_subcommand(true);
    let mut pages = Vec::new();
    let mut render = |name: String, cmd: clap::Command| {
        let mut out = Vec::new();
        // Rendering into a Vec cannot fail: io errors come only from the writer.
        let _ = clap_mangen::Man::new(cmd).render(&mut out);
        pages.push((name, out));
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("cwp-portwatch-{}", sub.get_name());
        let usage_name = format!("cwp-portwatch {}", sub.get_name());
        let page = sub.clone().display_name(&name).bin_name(usage_name);
        render(format!("{name}.1"), page);
    }
    render("cwp-portwatch.1".to_owned(), cmd);
    if let Some((_, main)) = pages.last_mut() {
        main.extend_from_slice(MAIN_PAGE_FILES.as_bytes());
    }
    pages.push((
        "cwp-portwatch.toml.5".to_owned(),
        CONFIG_MAN_PAGE.as_bytes().to_vec(),
    ));
    pages
}

/// What `cwp-portwatch(1)` says beyond the CLI definition: where the files are.
const MAIN_PAGE_FILES: &str = r#".SH FILES
.TP
.I /etc/cwp-portwatch/config.toml
The default config file (\fB\-\-config\fR, \fBCWP_PORTWATCH_CONFIG\fR); see
.BR cwp-portwatch.toml (5).
.TP
.I /usr/lib/systemd/system/cwp-portwatch.service
The hardened systemd unit.
.TP
.I /usr/share/doc/cwp-portwatch/
Example config, watchlist and simulator scenario.
.SH "SEE ALSO"
.BR cwp-portwatch.toml (5),
.BR systemd.exec (5),
.BR journalctl (1)
"#;

/// The completion scripts for bash, zsh and fish, under the names those shells look for.
fn completions() -> Vec<(String, Vec<u8>)> {
    use clap_complete::Shell;
    [
        (Shell::Bash, "cwp-portwatch.bash"),
        (Shell::Zsh, "_cwp-portwatch"),
        (Shell::Fish, "cwp-portwatch.fish"),
    ]
    .into_iter()
    .map(|(shell, file)| {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "cwp-portwatch", &mut out);
        (file.to_owned(), out)
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// The parser's raw structs, as source: the test reads the keys from the same text the
    /// compiler does, so a key added there without a line in the page fails here.
    const RAW: &str = include_str!("config/raw.rs");

    /// `(table, key)` for every key the config parser accepts; "" is the top level.
    fn parser_keys() -> BTreeSet<(String, String)> {
        // struct name → its fields (name, type)
        let mut structs: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in RAW.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("pub(super) struct ") {
                current = rest.split_whitespace().next().map(str::to_owned);
            } else if line == "}" {
                current = None;
            } else if let (Some(name), Some(field)) = (&current, line.strip_prefix("pub(super) ")) {
                let (key, ty) = field.split_once(':').expect("a field `name: Type`");
                structs
                    .entry(name.clone())
                    .or_default()
                    .push((key.trim().to_owned(), ty.trim().to_owned()));
            }
        }
        let top = structs.get("RawConfig").expect("RawConfig in raw.rs");
        let mut keys = BTreeSet::new();
        for (key, ty) in top {
            let table = structs
                .iter()
                .find(|(name, _)| ty.contains(&format!("<{name}>")));
            match table {
                Some((_, fields)) => {
                    keys.extend(fields.iter().map(|(k, _)| (key.clone(), k.clone())));
                }
                None => {
                    keys.insert((String::new(), key.clone()));
                }
            }
        }
        keys
    }

    /// `(table, key)` for every `.TP` / `.B key` entry of the page, under `.SS [table]`.
    fn page_keys() -> BTreeSet<(String, String)> {
        let mut keys = BTreeSet::new();
        let mut table = String::new();
        let mut after_tp = false;
        for line in CONFIG_MAN_PAGE.lines() {
            if let Some(heading) = line.strip_prefix(".SS ") {
                // `[api]`, and `[[account]]` for an array of tables.
                table = heading
                    .strip_prefix("[[")
                    .and_then(|h| h.strip_suffix("]]"))
                    .or_else(|| heading.strip_prefix('[').and_then(|h| h.strip_suffix(']')))
                    .unwrap_or("")
                    .to_owned();
            } else if after_tp && let Some(key) = line.strip_prefix(".B ") {
                keys.insert((table.clone(), key.trim().to_owned()));
            }
            after_tp = line == ".TP";
        }
        keys
    }

    #[test]
    fn parser_keys_are_found() {
        let keys = parser_keys();
        // A sanity floor so a change in raw.rs's layout cannot make the check below vacuous.
        assert!(
            keys.contains(&(String::new(), "watchlist".to_owned())),
            "{keys:?}"
        );
        assert!(
            keys.contains(&("api".to_owned(), "timeout".to_owned())),
            "{keys:?}"
        );
        assert!(
            keys.contains(&("log".to_owned(), "level".to_owned())),
            "{keys:?}"
        );
        assert!(keys.len() >= 15, "{keys:?}");
    }

    #[test]
    fn config_page_documents_every_key() {
        let parser = parser_keys();
        let page = page_keys();
        let missing: Vec<_> = parser.difference(&page).collect();
        let unknown: Vec<_> = page.difference(&parser).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "packaging/cwp-portwatch.toml.5 out of step with src/config/raw.rs:\n\
             undocumented (table, key): {missing:?}\nnot accepted by the parser: {unknown:?}"
        );
    }

    #[test]
    fn check_takes_probe() {
        let cli = Cli::try_parse_from(["cwp-portwatch", "check", "--probe", "--config", "c.toml"])
            .unwrap();
        match cli.command {
            Command::Check(args) => {
                assert!(args.probe);
                assert_eq!(args.config.config, PathBuf::from("c.toml"));
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["cwp-portwatch", "check"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Check(CheckArgs { probe: false, .. })
        ));
    }

    #[test]
    fn version_names_the_commit() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")), "{VERSION}");
        assert!(VERSION.contains("(commit "), "{VERSION}");
    }

    #[test]
    fn man_pages_cover_every_visible_command_and_the_config() {
        let names: BTreeSet<String> = man_pages().into_iter().map(|(n, _)| n).collect();
        for expected in [
            "cwp-portwatch.1",
            "cwp-portwatch-run.1",
            "cwp-portwatch-check.1",
            "cwp-portwatch.toml.5",
        ] {
            assert!(names.contains(expected), "{expected} not in {names:?}");
        }
        assert!(
            !names
                .iter()
                .any(|n| n.contains("generate") || n.contains("help")),
            "{names:?}"
        );
        let main = man_pages()
            .into_iter()
            .find(|(n, _)| n == "cwp-portwatch.1")
            .map(|(_, p)| String::from_utf8(p).unwrap())
            .unwrap();
        assert!(!main.contains("cwp-portwatch-help"), "{main}");
        assert!(main.contains(".BR cwp-portwatch.toml (5)"), "{main}");
    }

    #[test]
    fn generate_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let args = GenerateArgs {
            what: Generated::Completions,
            dir: dir.path().join("out"),
        };
        let written = generate(&args).unwrap();
        assert_eq!(written.len(), 3);
        let again = generate(&args).unwrap_err();
        assert_eq!(again.code(), "generate.write");
        assert!(again.to_string().contains("new, empty folder"), "{again}");
    }

    #[test]
    fn generate_errors_escape_control_characters_in_paths() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "").unwrap();
        // A folder below a regular file cannot be created.
        let args = GenerateArgs {
            what: Generated::Man,
            dir: file.join("a\nb\u{1b}[2J"),
        };
        let e = generate(&args).unwrap_err();
        assert_eq!(e.code(), "generate.folder");
        let text = e.to_string();
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(text.contains("a\\u{a}b\\u{1b}[2J"), "{text}");
    }
}
