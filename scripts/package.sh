#!/usr/bin/env bash
# Builds the .deb and the .rpm of cwp-portwatch (docs/packaging.md):
#   scripts/package.sh            -> target/debian/*.deb and target/generate-rpm/*.rpm
# Steps: the release binary; its man pages and shell completions, generated from the real CLI
# (`cwp-portwatch generate`) into a fresh target/packaging/; `cargo deb --no-build` and
# `cargo generate-rpm` with the [package.metadata.*] of Cargo.toml. Installs cargo-deb and
# cargo-generate-rpm from crates.io at the pinned versions below when missing (once: a few
# minutes). Fails (non-zero) on any error.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

# Installs crate $1 at version $2 unless `cargo install --list` already has that version.
ensure_tool() {
  if ! cargo install --list | grep -qx "$1 v$2:"; then
    echo "== installing $1 $2"
    cargo install --locked --version "$2" "$1"
  fi
}
ensure_tool cargo-deb "$CARGO_DEB_VERSION"
ensure_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"

# With high availability on etcd (`[ha]`, docs/ha.md): the packages are what operators run.
echo "== cargo build --release --features ha"
cargo build --release --locked --features ha

echo "== man pages and completions"
out=target/packaging
rm -rf "$out"
target/release/cwp-portwatch generate man "$out/man"
target/release/cwp-portwatch generate completions "$out/completions"
# -n: no name or time stamp in the archive, so the same input gives the same bytes.
gzip -9n "$out"/man/*

echo "== .deb"
cargo deb --no-build --locked
echo "== .rpm"
cargo generate-rpm

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
echo "== built"
ls -1 target/debian/cwp-portwatch_"$version"*.deb target/generate-rpm/cwp-portwatch-"$version"*.rpm
