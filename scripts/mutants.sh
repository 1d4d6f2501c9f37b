#!/bin/sh
# Mutation testing of the pure core with cargo-mutants (https://mutants.rs), as recorded in
# docs/testing.md. Not run in CI: one mutant is one incremental build plus the unit tests,
# about 10-30 s each, 320-odd mutants.
#
# Usage: scripts/mutants.sh [extra cargo-mutants options, e.g. --iterate, --jobs 2]
# Needs: cargo install cargo-mutants --locked
#
# The unit tests only (`--lib`), filtered to the modules that exercise the core (the others
# neither call it nor would catch more): the whole library test run is ten times slower.
# Results land in mutants.out/ (caught.txt, missed.txt, timeout.txt, unviable.txt); TC3
# signing, its own crate (crates/tc3), is mutated in a second run against its own unit tests,
# results in target/mutants-tc3/mutants.out/.
set -eu
cd "$(dirname "$0")/.."
cargo mutants --package cwp-tc3 -C --lib --output target/mutants-tc3 "$@"
exec cargo mutants \
    -f src/tracker.rs -f src/pacing.rs -f src/scheduler.rs -f src/status.rs \
    -f src/rate_control.rs -f 'src/state/*.rs' -f src/api/error.rs \
    -f 'src/engine/agents/*.rs' -f src/agent_uuid.rs \
    -C --lib "$@" \
    -- -- pacing:: rate_control:: scheduler:: status:: state:: tracker:: api:: engine:: \
    agent_uuid::
