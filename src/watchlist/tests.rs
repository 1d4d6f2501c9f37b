use std::path::{Path, PathBuf};

use super::batch::{BatchPlan, is_agent_header};
use super::parse::{parse_batched, parse_whole};
use super::*;
use crate::problems::ConfigErrors;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/watchlist")
        .join(name)
}

fn parse(text: &str) -> Result<Watchlist, ConfigErrors> {
    Watchlist::from_toml_str(text, Path::new("watchlist.toml"))
}

#[test]
fn good_file_is_normalized_to_lower_case() {
    let path = fixture("good.toml");
    let watchlist = Watchlist::load(&path).unwrap();
    assert_eq!(watchlist.path, path);
    assert_eq!(
        watchlist.agents,
        vec![
            Agent {
                uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".parse().unwrap(),
                name: Some("web-01".into()),
                facts: None,
            },
            Agent {
                uuid: "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".parse().unwrap(),
                name: None,
                facts: None,
            },
            Agent {
                uuid: "f47ac10b-58cc-4372-a567-0e02b2c3d479".parse().unwrap(),
                name: Some("db-01".into()),
                facts: None,
            },
        ]
    );
}

#[test]
fn example_watchlist_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/watchlist.example.toml");
    assert_eq!(Watchlist::load(&path).unwrap().agents.len(), 3);
}

#[test]
fn every_bad_uuid_is_reported_with_its_line() {
    let errors = Watchlist::load(&fixture("bad-uuid.toml")).unwrap_err();
    assert_eq!(errors.code(), "ConfigError.Invalid");
    let lines: Vec<_> = errors.problems.iter().map(|p| (p.line, p.column)).collect();
    assert_eq!(
        lines,
        vec![(Some(5), Some(8)), (Some(9), Some(8))],
        "{errors}"
    );
    for problem in &errors.problems {
        assert!(problem.message.contains("8-4-4-4-12 hex digits"));
    }
    assert!(
        errors.problems[0]
            .message
            .contains("\"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd\"")
    );
}

#[test]
fn duplicate_names_both_lines() {
    let errors = Watchlist::load(&fixture("duplicate.toml")).unwrap_err();
    assert_eq!(errors.problems.len(), 1, "{errors}");
    let problem = &errors.problems[0];
    assert_eq!(problem.line, Some(9));
    assert!(
        problem.message.contains("line 2 and line 9"),
        "{}",
        problem.message
    );
    assert!(
        problem
            .message
            .contains("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1")
    );
}

#[test]
fn type_errors_point_at_the_watchlist_example() {
    let errors = parse("agent = \"x\"\n").unwrap_err();
    let message = &errors.problems[0].message;
    assert!(
        message.contains("config/watchlist.example.toml"),
        "{message}"
    );
    assert!(!message.contains("config.example.toml"), "{message}");
}

#[test]
fn empty_watchlist_is_valid() {
    assert!(
        Watchlist::load(&fixture("empty.toml"))
            .unwrap()
            .agents
            .is_empty()
    );
    assert!(parse("").unwrap().agents.is_empty());
    assert!(parse("agent = []").unwrap().agents.is_empty());
}

#[test]
fn unknown_keys_and_missing_uuid() {
    let errors = Watchlist::load(&fixture("unknown-key.toml")).unwrap_err();
    assert_eq!(errors.code(), "ConfigError.Syntax");
    let problem = &errors.problems[0];
    assert_eq!(problem.line, Some(3));
    assert!(problem.message.contains("`hostname`") && problem.message.contains("`name`"));

    let errors =
        parse("[[agents]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n").unwrap_err();
    assert!(errors.problems[0].message.contains("`agent`"), "{errors}");

    let errors =
        parse("[[agent]]\nname = \"x\"\n\n[[agent]]\nname = \"\"\nuuid = \"x\"\n").unwrap_err();
    assert_eq!(errors.problems.len(), 3, "{errors}");
    assert_eq!(errors.problems[0].line, Some(1));
    assert!(errors.problems[0].message.contains("has no `uuid`"));
    assert!(errors.problems[1].message.contains("`name` is empty"));
    assert!(errors.problems[2].message.contains("not an agent Uuid"));

    let errors =
        parse("[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\nname = \"a\\nb\"\n")
            .unwrap_err();
    assert!(errors.problems[0].message.contains("a control character"));
}

/// Batches of `batch` tables (which must really be batched) against the whole-file parse.
fn assert_batches_match_whole(text: &str, batch: usize) -> Result<Watchlist, ConfigErrors> {
    let path = Path::new("watchlist.toml");
    let plan = BatchPlan::of(text, batch).expect("this text is split");
    assert!(plan.starts.len() > 1, "{plan:?}");
    let batched = parse_batched(text, path, batch).expect("every batch parses");
    let whole = parse_whole(text, path);
    assert_eq!(batched, whole, "batch size {batch}");
    assert_eq!(parse(text), whole);
    whole
}

#[test]
fn batches_give_the_same_agents_and_problem_positions_as_one_parse() {
    let uuid = |i: usize| format!("{i:08x}-0000-4000-8000-{i:012x}");
    let mut text = String::from("# comment before the first table\n\n   # indented comment\n");
    for i in 0..40 {
        // Vary the header's spelling, so batches start at every allowed form.
        text.push_str(match i % 4 {
            0 => "[[agent]]\n",
            1 => "  [[ agent ]]   # with a comment\n",
            2 => "[[agent]]\r\n",
            _ => "\t[[agent]]\t\n",
        });
        match i {
            3 => text.push_str("name = \"no uuid\"\n"),
            7 => text.push_str("uuid = \"not-a-uuid\"\nname = \"\"\n"),
            12 => text.push_str(&format!("uuid = \"{}\"\n", uuid(2).to_uppercase())),
            18 => text.push_str(&format!("uuid = \"{}\"\nname = \"a\\tb\"\n", uuid(18))),
            25 => text.push_str(&format!("name = \"ü-é\"\nuuid = \"{}\"\n", uuid(99))),
            31 | 39 => text.push_str(&format!("uuid = \"{}\"\n", uuid(30))),
            _ => text.push_str(&format!("uuid = \"{}\"\nname = \"h-{i}\"\n", uuid(i))),
        }
        text.push('\n');
    }
    for batch in [1, 2, 3, 7, 39] {
        let errors = assert_batches_match_whole(&text, batch).unwrap_err();
        let places: Vec<_> = errors
            .problems
            .iter()
            .map(|p| (p.line.unwrap(), p.column.unwrap()))
            .collect();
        assert_eq!(
            places,
            vec![
                (16, 2),
                (32, 8),
                (33, 8),
                (52, 8),
                (76, 8),
                (127, 8),
                (158, 8)
            ],
            "{errors}"
        );
        assert!(errors.problems[0].message.contains("has no `uuid`"));
        assert!(errors.problems[3].message.contains("line 13 and line 52"));
        assert!(errors.problems[4].message.contains("a control character"));
        assert!(errors.problems[6].message.contains("line 123 and line 158"));
    }

    // Without problems, the agents match too.
    let good = big_watchlist(50);
    for batch in [1, 4, 49] {
        let watchlist = assert_batches_match_whole(&good, batch).unwrap();
        assert_eq!(watchlist.agents.len(), 50);
    }
}

#[test]
fn unsafe_or_unparsable_batches_fall_back_to_one_parse() {
    let good = big_watchlist(6);
    let path = Path::new("watchlist.toml");
    // A syntax error in the fourth batch: the batches give up, the whole parse places it.
    let broken = good.replacen("name = \"host-3\"", "name = host-3", 1);
    assert!(BatchPlan::of(&broken, 1).is_some());
    assert_eq!(parse_batched(&broken, path, 1), None);
    let errors = parse(&broken).unwrap_err();
    assert_eq!(errors.code(), "ConfigError.Syntax");
    assert_eq!(errors.problems[0].line, Some(15), "{errors}");

    // Not split at all: multi-line strings, keys before the first table, too few tables.
    for text in [
        format!("{good}[[agent]]\nname = \"\"\"\n[[agent]]\n\"\"\"\n"),
        format!("{good}[[agent]]\nname = '''x'''\n"),
        format!("agent = []\n{good}"),
        format!("[[\"agent\"]]\n{good}"),
    ] {
        assert_eq!(BatchPlan::of(&text, 1), None, "{text}");
        assert_eq!(parse_batched(&text, path, 1), None);
        assert_eq!(parse(&text), parse_whole(&text, path));
        assert!(parse(&text).is_err());
    }
    assert_eq!(BatchPlan::of(&good, 6), None);

    // The header pattern.
    for header in [
        "[[agent]]",
        " [[ agent ]] # x",
        "[[agent]]\r\n",
        "[[agent]]#",
    ] {
        assert!(is_agent_header(header), "{header:?}");
    }
    for other in [
        "[agent]",
        "[[agents]]",
        "[[agent.x]]",
        "[[agent]] x",
        "# [[agent]]",
    ] {
        assert!(!is_agent_header(other), "{other:?}");
    }
}

/// Issue 8 #12: a 5 MB name and names with U+2028 or U+202E passed and reached every log
/// line. A name is at most 256 characters, without control characters, line or paragraph
/// separators or bidirectional controls; each refusal is placed at the value and names the
/// character.
#[test]
fn names_are_bounded_and_free_of_controls_separators_and_bidi() {
    let named = |name: &str| {
        parse(&format!(
            "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\nname = \"{name}\"\n"
        ))
    };
    let longest = "é".repeat(256);
    assert_eq!(
        named(&longest).unwrap().agents[0].name.as_deref(),
        Some(longest.as_str())
    );
    assert!(named("web-01 (主) ünïcode ok").is_ok());
    let errors = named(&"x".repeat(5 << 20)).unwrap_err();
    let problem = &errors.problems[0];
    assert_eq!((problem.line, problem.column), (Some(3), Some(8)));
    assert!(
        problem
            .message
            .contains("`name` is 5242880 characters long")
            && problem.message.contains("at most 256"),
        "{problem}"
    );
    assert!(problem.message.len() < 300, "the value is cut short");
    for (written, code, what) in [
        ("a\\u2028b", "U+2028", "line separator"),
        ("a\\u2029b", "U+2029", "paragraph separator"),
        ("a\\u202Eb", "U+202E", "bidirectional"),
        ("a\\u202Ab", "U+202A", "bidirectional"),
        ("a\\u200Eb", "U+200E", "bidirectional"),
        ("a\\u200Fb", "U+200F", "bidirectional"),
        ("a\\u2066b", "U+2066", "bidirectional"),
        ("a\\u2069b", "U+2069", "bidirectional"),
        ("a\\u061Cb", "U+061C", "bidirectional"),
        ("a\\u0085b", "U+0085", "control character"),
        ("a\\u009Bb", "U+009B", "control character"),
        ("a\\u007Fb", "U+007F", "control character"),
        ("a\\u001Bb", "U+001B", "control character"),
        ("a\\tb", "U+0009", "control character"),
    ] {
        let errors = named(written).unwrap_err();
        assert_eq!(errors.problems.len(), 1, "{written}: {errors}");
        let problem = &errors.problems[0];
        assert_eq!(
            (problem.line, problem.column),
            (Some(3), Some(8)),
            "{written}"
        );
        assert!(
            problem.message.contains(code) && problem.message.contains(what),
            "{written}: {problem}"
        );
        assert!(problem.message.contains("at character 2"), "{problem}");
    }
}

proptest::proptest! {
    /// Whatever a name holds, a forbidden character anywhere in it is refused, and an
    /// accepted name has none and at most 256 characters.
    #[test]
    fn no_forbidden_character_gets_through(
        name in "\\PC{0,300}",
        bad in proptest::sample::select(vec![
            '\u{0}', '\u{1f}', '\u{7f}', '\u{80}', '\u{9f}', '\u{2028}', '\u{2029}',
            '\u{200e}', '\u{200f}', '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}',
            '\u{61c}',
        ]),
        at in 0usize..300,
    ) {
        let toml_string = |text: &str| toml::Value::String(text.to_owned()).to_string();
        let text = |name: &str| format!(
            "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\nname = {}\n",
            toml_string(name)
        );
        if let Ok(watchlist) = parse(&text(&name)) {
            let accepted = watchlist.agents[0].name.clone().unwrap_or_default();
            proptest::prop_assert!(accepted.chars().count() <= 256);
            let clean = accepted.chars().all(|c| !c.is_control()
                && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}'
                    | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{61c}'));
            proptest::prop_assert!(clean, "{:?}", accepted);
        }
        let mut chars: Vec<char> = name.chars().collect();
        chars.insert(at.min(chars.len()), bad);
        let with_bad: String = chars.into_iter().collect();
        proptest::prop_assert!(parse(&text(&with_bad)).is_err(), "{:?}", with_bad);
    }
}

fn big_watchlist(count: usize) -> String {
    let mut text = String::with_capacity(count * 80);
    for i in 0..count {
        text.push_str(&format!(
            "[[agent]]\nuuid = \"{:08x}-0000-4000-8000-{:012x}\"\nname = \"host-{i}\"\n\n",
            i, i
        ));
    }
    text
}

#[test]
fn hundred_thousand_agents() {
    let text = big_watchlist(100_000);
    let started = std::time::Instant::now();
    let watchlist = parse(&text).unwrap();
    println!(
        "100,000 agents ({} MB) parsed in {:?}",
        text.len() >> 20,
        started.elapsed()
    );
    assert_eq!(watchlist.agents.len(), 100_000);
    assert_eq!(watchlist.agents[99_999].name.as_deref(), Some("host-99999"));

    // Every agent duplicated: 100,000 problems, each naming both lines, still quick.
    let doubled = format!("{text}{text}");
    let started = std::time::Instant::now();
    let errors = parse(&doubled).unwrap_err();
    println!("100,000 duplicates reported in {:?}", started.elapsed());
    assert_eq!(errors.problems.len(), 100_000);
    assert!(
        errors.problems[0]
            .message
            .contains("line 2 and line 400002"),
        "{}",
        errors.problems[0]
    );
}

/// Tags: each refused at its own line:column, the whole list when it is too long;
/// kept sorted with duplicates folded, and one shared set for agents tagged alike.
#[test]
fn tags_are_checked_at_their_place_sorted_folded_and_shared() {
    let w = parse(
        "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n\
         tags = [\"web\", \"prod\", \"web\"]\n\
         [[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd2\"\ntags = [\"prod\", \"web\"]\n\
         [[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd3\"\ntags = []\n",
    )
    .unwrap();
    let tags: Vec<&str> = w.agents[0].tags().iter().map(|t| &**t).collect();
    assert_eq!(tags, ["prod", "web"]);
    assert_eq!(w.agents[0].facts, w.agents[1].facts);
    assert!(
        Arc::ptr_eq(
            w.agents[0].facts.as_ref().unwrap(),
            w.agents[1].facts.as_ref().unwrap()
        ),
        "one set for both"
    );
    assert_eq!(w.agents[2].facts, None, "no tags: nothing stored");
    let facts = w.agents[0].facts.as_deref().unwrap();
    assert_eq!((facts.region(), facts.wan()), (None, false));

    let problems = parse(
        "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n\
         tags = [\"ok\", \"\", \"a\\u202Eb\", \"  \"]\n\
         [[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd2\"\ntags = [\"x\", \"y\\tz\"]\n",
    )
    .unwrap_err()
    .problems;
    let places: Vec<_> = problems
        .iter()
        .map(|p| (p.line.unwrap(), p.column.unwrap()))
        .collect();
    assert_eq!(places, [(3, 15), (3, 19), (3, 31), (6, 14)], "{problems:?}");
    assert!(problems[0].message.contains("a tag is empty"));
    assert!(problems[1].message.contains("U+202E"), "{}", problems[1]);
    assert!(problems[2].message.contains("a tag is empty"));
    assert!(problems[3].message.contains("U+0009"), "{}", problems[3]);

    let long = "t".repeat(MAX_TAG_CHARS + 1);
    let problems = parse(&format!(
        "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntags = [\"{long}\"]\n"
    ))
    .unwrap_err()
    .problems;
    assert_eq!((problems[0].line, problems[0].column), (Some(3), Some(9)));
    assert!(
        problems[0].message.contains("65 characters long")
            && problems[0].message.contains("at most 64"),
        "{}",
        problems[0]
    );
    assert!(
        parse(&format!(
            "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntags = [\"{}\"]\n",
            "é".repeat(MAX_TAG_CHARS)
        ))
        .is_ok(),
        "64 characters (128 bytes) is the limit"
    );

    // Too many: one problem at the list, however long it is.
    for n in [MAX_TAGS + 1, 100_000] {
        let list: Vec<String> = (0..n).map(|i| format!("\"t{i}\"")).collect();
        let problems = parse(&format!(
            "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntags = [{}]\n",
            list.join(", ")
        ))
        .unwrap_err()
        .problems;
        assert_eq!(problems.len(), 1);
        assert_eq!((problems[0].line, problems[0].column), (Some(3), Some(8)));
        assert!(
            problems[0]
                .message
                .contains(&format!("`tags` has {n} entries"))
                && problems[0].message.contains("at most 16"),
            "{}",
            problems[0]
        );
    }
    let list: Vec<String> = (0..MAX_TAGS).map(|i| format!("\"t{i}\"")).collect();
    let w = parse(&format!(
        "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntags = [{}]\n",
        list.join(", ")
    ))
    .unwrap();
    assert_eq!(w.agents[0].tags().len(), MAX_TAGS);

    // Not a list of strings: a type error that names the key.
    let errors =
        parse("[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntags = \"web\"\n")
            .unwrap_err();
    assert_eq!(errors.problems[0].line, Some(3), "{errors}");
    let errors = parse("[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntags = [1]\n")
        .unwrap_err();
    assert_eq!(errors.problems[0].line, Some(3), "{errors}");
}

#[test]
fn tags_survive_batching() {
    let mut text = String::new();
    for i in 0..30 {
        text.push_str(&format!(
            "[[agent]]\nuuid = \"{i:08x}-0000-4000-8000-{i:012x}\"\ntags = [\"t{}\", \"all\"]\n",
            i % 3
        ));
    }
    text.push_str("[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntags = [\"\"]\n");
    let errors = assert_batches_match_whole(&text, 4).unwrap_err();
    assert_eq!(
        (errors.problems[0].line, errors.problems[0].column),
        (Some(93), Some(9))
    );
    let good = text.rsplit_once("[[agent]]").unwrap().0;
    let w = assert_batches_match_whole(good, 4).unwrap();
    let tags: Vec<&str> = w.agents[4].tags().iter().map(|t| &**t).collect();
    assert_eq!(tags, ["all", "t1"]);
}

#[test]
fn merged_facts_are_the_union_of_tags_with_region_and_wan_from_discovery() {
    let listed = Facts::new(["web", "prod"], None, false).shared();
    let found = Facts::new(["prod", "eu"], Some("ap-guangzhou".into()), true).shared();
    let merged = Facts::merged(listed.as_ref(), found.as_ref()).unwrap();
    let tags: Vec<&str> = merged.tags().iter().map(|t| &**t).collect();
    assert_eq!(tags, ["eu", "prod", "web"]);
    assert_eq!(
        (merged.region(), merged.wan()),
        (Some("ap-guangzhou"), true)
    );
    assert_eq!(Facts::merged(None, None), None);
    assert!(Arc::ptr_eq(
        &Facts::merged(listed.as_ref(), None).unwrap(),
        listed.as_ref().unwrap()
    ));
    // Listed tags all found: the discovered set as is.
    let sub = Facts::new(["eu"], None, false).shared();
    assert!(Arc::ptr_eq(
        &Facts::merged(sub.as_ref(), found.as_ref()).unwrap(),
        found.as_ref().unwrap()
    ));
    assert_eq!(
        Facts::new(Vec::<String>::new(), Some("".into()), false).shared(),
        None
    );
}

#[test]
fn an_account_key_is_kept_with_its_place_and_checked_by_rule() {
    let w = parse(
        "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n\
         [[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd2\"\naccount = \"prod\"\n",
    )
    .unwrap();
    assert_eq!(
        w.assigned,
        [Assigned {
            index: 1,
            account: "prod".into(),
            line: 5,
            column: 11
        }]
    );
    let problems =
        parse("[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\naccount = \"Prod X\"\n")
            .unwrap_err()
            .problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!((problems[0].line, problems[0].column), (Some(3), Some(11)));
    assert!(problems[0].message.contains("not an account name"));
}
