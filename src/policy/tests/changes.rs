//! The changes between two evaluations: exact sequences.

use super::*;
use crate::policy::{Change, ClearReason, changes};

#[test]
fn a_closed_port_clears_closed_and_a_new_one_is_raised() {
    let a = unexpected(3306, "mysqld", "web", Severity::Warning);
    let b = unexpected(6379, "redis-server", "web", Severity::Warning);
    let old = findings([a.clone()]);
    let new = findings([b.clone()]);
    assert_eq!(
        changes(&old, &new, |_, _| false, |_, _| false),
        vec![Change::Cleared(&a, ClearReason::Closed), Change::Raised(&b)]
    );
}
