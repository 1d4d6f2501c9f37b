use tracing::Level;

use super::*;
use crate::policy::{ClearReason, Severity};

fn changed(to: &str) -> Event {
    Event::StatusChanged {
        uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
        agent_name: "web-01".into(),
        from_status: "COLLECTING".into(),
        to_status: to.into(),
        request_id: "r".into(),
        error_code: None,
    }
}

#[test]
fn levels_follow_the_spec() {
    assert_eq!(changed("COMPLETE").level(), Level::INFO);
    assert_eq!(changed("FAILED").level(), Level::WARN);
    assert_eq!(changed("AGENT_OFFLINE").level(), Level::WARN);
    assert_eq!(
        Event::ConfigRejected {
            error_message: String::new()
        }
        .level(),
        Level::ERROR
    );
}

#[test]
fn message_is_readable() {
    assert_eq!(
        changed("COMPLETE").message(),
        "web-01 (6b6cd843…) COLLECTING → COMPLETE"
    );
}

#[test]
fn messages_hold_no_control_characters_whatever_the_api_or_a_file_said() {
    let hostile = "\u{1b}[2J\u{1b}]0;pwned\u{7}\r\nforged line";
    let events = [
        changed(hostile),
        Event::PollFailed {
            uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
            agent_name: "web\u{1b}[31m".into(),
            error_code: hostile.into(),
            error_message: hostile.into(),
            request_id: None,
            consecutive_failures: 1,
        },
        Event::RateLimited {
            error_code: hostile.into(),
            requests_per_second: 10,
        },
        Event::CredentialsFailed {
            error_code: hostile.into(),
            error_message: hostile.into(),
            source: hostile.into(),
        },
        Event::ConfigRejected {
            error_message: format!("config.toml:3:1: bad\nconfig.toml:4:1: {hostile}"),
        },
        Event::StateDamaged {
            path: hostile.into(),
            error_message: hostile.into(),
            moved_to: hostile.into(),
        },
        Event::PortOpened {
            uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
            agent_name: hostile.into(),
            port: 22,
            process_name: hostile.into(),
            pid: 1,
            machine_ip: hostile.into(),
            machine_name: hostile.into(),
            request_id: "r".into(),
            baseline: false,
            cwp: None,
        },
        Event::PortClosed {
            uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
            agent_name: hostile.into(),
            port: 22,
            process_name: hostile.into(),
            pid: 1,
            machine_ip: hostile.into(),
            machine_name: hostile.into(),
            request_id: "r".into(),
            cwp: None,
        },
        Event::InventoryFailed {
            uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
            agent_name: hostile.into(),
            error_code: hostile.into(),
            error_message: hostile.into(),
        },
        Event::ScanRequested {
            uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
            agent_name: hostile.into(),
            reason: hostile.into(),
            request_id: "r".into(),
        },
    ];
    for event in &events {
        let message = event.message();
        assert!(!message.chars().any(char::is_control), "{message:?}");
        assert!(message.contains("\\u{1b}[2J"), "{message:?}");
    }
    let rejected = events[4].message();
    assert!(rejected.contains("bad; config.toml:4:1"), "{rejected:?}");
}

#[test]
fn state_damaged_says_where_the_file_went() {
    let e = Event::StateDamaged {
        path: "/var/lib/cwp-portwatch/state.json".into(),
        error_message: "EOF while parsing".into(),
        moved_to: "/var/lib/cwp-portwatch/state.json.damaged-1700000000".into(),
    };
    assert_eq!(e.level(), Level::WARN);
    assert!(
        e.message()
            .contains("kept as /var/lib/cwp-portwatch/state.json.damaged-1700000000"),
        "{}",
        e.message()
    );
}

#[test]
fn account_failed_says_which_account_why_and_when_it_is_tried_again() {
    let e = Event::AccountFailed {
        account: "second".into(),
        error_code: "AssumeRoleError.Unavailable".into(),
        error_message: "STS unavailable\u{1b}[2J".into(),
        attempt: 2,
        retry_in_seconds: 4,
    };
    assert_eq!(
        (e.name(), e.level(), e.message_id()),
        ("account_failed", Level::ERROR, message_id::ACCOUNT_FAILED)
    );
    assert_eq!(
        e.message(),
        "account second could not start (AssumeRoleError.Unavailable: STS \
         unavailable\\u{1b}[2J); attempt 2, next try in 4 s; the other accounts run"
    );
}

#[test]
fn message_ids_are_distinct_128_bit_hex() {
    let mut ids = message_id::ALL.to_vec();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), message_id::ALL.len());
    assert!(
        ids.iter()
            .all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
    );
}

#[test]
fn port_events_read_as_users_asked() {
    let e = Event::PortOpened {
        uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
        agent_name: "db-01".into(),
        port: 3306,
        process_name: "mysqld".into(),
        pid: 1400,
        machine_ip: "10.0.0.5".into(),
        machine_name: "db".into(),
        request_id: "r".into(),
        baseline: false,
        cwp: None,
    };
    assert_eq!(e.message(), "db-01 (6b6cd843…): port 3306 opened by mysqld");
    assert_eq!((e.name(), e.level()), ("port_opened", Level::INFO));
    let failed = Event::InventoryFailed {
        uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
        agent_name: String::new(),
        error_code: "InventoryError.Incomplete".into(),
        error_message: "m".into(),
    };
    assert_eq!(failed.level(), Level::WARN);
}

#[test]
fn finding_events_read_as_users_asked_with_their_levels_and_ids() {
    let f = |kind, severity| {
        Event::Finding(Box::new(FindingEvent {
            kind,
            uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
            agent_name: "web-01".into(),
            port: 6379,
            process_name: "redis\u{1b}[2J".into(),
            pid: Some(4242),
            machine_ip: "10.0.0.5".into(),
            machine_name: "web".into(),
            request_id: None,
            rule: "web tier".into(),
            severity,
            spec: None,
        }))
    };
    let raised = f(FindingKind::Unexpected, Severity::Warning);
    assert_eq!(
        raised.message(),
        "web-01 (6b6cd843…): port 6379 open by redis\\u{1b}[2J is unexpected (rule web tier, warning)"
    );
    assert_eq!(
        (raised.name(), raised.level(), raised.message_id()),
        ("port_unexpected", Level::WARN, message_id::PORT_UNEXPECTED)
    );
    let cleared = f(
        FindingKind::UnexpectedCleared(ClearReason::Allowed),
        Severity::Critical,
    );
    assert_eq!(
        (cleared.name(), cleared.level(), cleared.message_id()),
        (
            "port_unexpected_cleared",
            Level::ERROR,
            message_id::PORT_UNEXPECTED_CLEARED
        )
    );
    assert!(cleared.message().contains("no longer unexpected: allowed"));
    let Event::Finding(mut missing) = f(FindingKind::Missing, Severity::Critical) else {
        unreachable!()
    };
    missing.spec = Some("443/nginx".into());
    let missing = Event::Finding(missing);
    assert_eq!(
        missing.message(),
        "web-01 (6b6cd843…): required port 443/nginx is not open (rule web tier, critical)"
    );
    assert_eq!(
        (missing.name(), missing.level(), missing.message_id()),
        ("port_missing", Level::ERROR, message_id::PORT_MISSING)
    );
    let back = f(
        FindingKind::MissingCleared(ClearReason::Opened),
        Severity::Info,
    );
    assert_eq!(
        (back.name(), back.level(), back.message_id()),
        (
            "port_missing_cleared",
            Level::WARN,
            message_id::PORT_MISSING_CLEARED
        )
    );
    let Event::Finding(back) = back else {
        unreachable!()
    };
    assert_eq!(back.reason(), Some("opened"));
}
