#!/usr/bin/env bash
# Checks the packages as an operator meets them (docs/packaging.md); run by .ci/run as root on
# a machine where cwp-portwatch is not installed from elsewhere:
#   scripts/check-package.sh      (runs scripts/package.sh first)
# .deb: dpkg -i; the installed `--version`; the installed `check` on the installed config names
# exactly the watchlist and the credentials; systemd-analyze verify and security on the
# installed unit; man pages; the journal catalog; remove (only the operator's edited
# config.toml and own files stay) and purge (only the operator's own files stay).
# .rpm: rpm -qip / rpm -qlp, the same file list as the .deb; then installed with
# `rpm -i --nodeps` (Debian's rpm, its own database; --nodeps: Debian's libc is not an rpm):
# every file there, %post ran (the journal catalog knows the message ids), an upgrade to a
# release 2 whose packaged config.toml differs keeps the operator's edited one and puts the new
# one beside it as config.toml.rpmnew (`config(noreplace)`), `rpm -e` runs %preun/%postun
# (the catalog forgets) and keeps the edited config as config.toml.rpmsave.
# Fails (non-zero) on any error.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

fail() { echo "check-package: $*" >&2; exit 1; }

missing=()
command -v rpm >/dev/null 2>&1 || missing+=(rpm)
command -v man >/dev/null 2>&1 || missing+=(man-db)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v dpkg-shlibdeps >/dev/null 2>&1 || missing+=(dpkg-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Never touch an operator's real install; on CI (CI=true) a leftover can only be from an
# earlier run of this script that was killed, so it is purged.
if dpkg-query -W -f='${Status}' cwp-portwatch 2>/dev/null | grep -q installed; then
  [ "${CI:-}" = true ] || fail "cwp-portwatch is already installed; purge it first (dpkg -P cwp-portwatch)"
  echo "== purging a leftover cwp-portwatch"
  dpkg -P cwp-portwatch
fi

scripts/package.sh
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
deb=$(ls target/debian/cwp-portwatch_"$version"-*.deb)
rpmfile=$(ls target/generate-rpm/cwp-portwatch-"$version"-*.rpm)
work=$(mktemp -d)
installed=no
# On any failure: purge what this script installed, so the next run starts clean.
cleanup() {
  if [ "$installed" = yes ] && dpkg-query -W cwp-portwatch >/dev/null 2>&1; then
    dpkg -P cwp-portwatch >/dev/null 2>&1 || true
  fi
  if [ "$installed" = yes ] && rpm -q cwp-portwatch >/dev/null 2>&1; then
    rpm -e --nodeps cwp-portwatch >/dev/null 2>&1 || true
  fi
  if [ "$installed" = yes ]; then
    rm -f /etc/cwp-portwatch/watchlist.toml /etc/cwp-portwatch/config.toml.rpmsave \
      /etc/cwp-portwatch/config.toml.rpmnew
    rmdir /etc/cwp-portwatch 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The regular files of each package, with the paths that differ by design mapped to one
# name: Debian's zsh folder and the copyright file cargo-deb adds.
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $6}' | sed 's|^\./|/|' |
  grep -v '^/usr/share/doc/cwp-portwatch/copyright$' |
  sed 's|^/usr/share/zsh/vendor-completions/|/usr/share/zsh/FUNCTIONS/|' | sort >"$work/deb.list"
rpm -qlp "$rpmfile" | sed 's|^/usr/share/zsh/site-functions/|/usr/share/zsh/FUNCTIONS/|' |
  sort >"$work/rpm.list"
echo "== rpm -qip"
rpm -qip "$rpmfile" | tee "$work/rpm.info"
grep -q "^Name *: cwp-portwatch" "$work/rpm.info" || fail "rpm -qip: no Name cwp-portwatch"
grep -q "^Version *: $version" "$work/rpm.info" || fail "rpm -qip: no Version $version"
echo "== rpm -qlp: the same files as the .deb"
diff -u "$work/deb.list" "$work/rpm.list" || fail "the .deb and the .rpm ship different files"
rpm -qp --configfiles "$rpmfile" | grep -qx /etc/cwp-portwatch/config.toml ||
  fail "the .rpm does not mark /etc/cwp-portwatch/config.toml as a config file"
files=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $6}' | sed 's|^\./|/|')

echo "== dpkg -i"
[ ! -e /etc/cwp-portwatch ] || fail "/etc/cwp-portwatch exists already; move it away first"
installed=yes
dpkg -i "$deb"
for f in $files; do [ -f "$f" ] || fail "not installed: $f"; done

echo "== cwp-portwatch --version"
got=$(/usr/bin/cwp-portwatch --version)
echo "$got"
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
[ "$got" = "cwp-portwatch $version (commit $commit)" ] || fail "--version: $got"

echo "== cwp-portwatch check on the installed config"
set +e
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$work" /usr/bin/cwp-portwatch check \
  >"$work/check.out" 2>"$work/check.err"
code=$?
set -e
cat "$work/check.out" "$work/check.err"
[ "$code" = 1 ] || fail "check exited $code, expected 1 (something to fill in)"
grep -v 'problem(s) found$' "$work/check.err" >"$work/problems"
[ "$(wc -l <"$work/problems")" = 2 ] || fail "check: expected exactly 2 problems"
sed -n 1p "$work/problems" | grep -q '^/etc/cwp-portwatch/watchlist.toml: ' ||
  fail "check: the first problem is not the watchlist"
sed -n 2p "$work/problems" | grep -q '^credentials: ' ||
  fail "check: the second problem is not the credentials"

echo "== systemd-analyze verify and security on the installed unit"
unit=/usr/lib/systemd/system/cwp-portwatch.service
SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no "$unit" 2>"$work/verify.err" ||
  { cat "$work/verify.err"; fail "systemd-analyze verify failed"; }
if grep -E 'cwp-portwatch|ignoring' "$work/verify.err"; then
  fail "systemd-analyze verify complains about the unit"
fi
systemd-analyze security --offline=yes --threshold=15 "$unit" | tail -n 1

echo "== man pages"
for page in "1 cwp-portwatch" "1 cwp-portwatch-check" "5 cwp-portwatch.toml"; do
  # shellcheck disable=SC2086 # section and name
  MANPAGER=cat MANWIDTH=100 man $page >"$work/man.txt" 2>"$work/man.err" ||
    { cat "$work/man.err"; fail "man $page"; }
  [ -s "$work/man.txt" ] || fail "man $page is empty"
done
MANPAGER=cat man 1 cwp-portwatch | grep -q 'check' || fail "man cwp-portwatch lacks check"
MANPAGER=cat man 5 cwp-portwatch.toml | grep -q 'requests_per_second' ||
  fail "man cwp-portwatch.toml lacks requests_per_second"

echo "== journal catalog"
journalctl --list-catalog 96e7064e0a524ac7b1e20a88b3782012 | grep -q 96e7064e0a524ac7b1e20a88b3782012 ||
  fail "journalctl --list-catalog does not know the status_changed message id"

echo "== dpkg -r: the conffile, the state and the operator's files stay"
echo '# edited by the operator' >>/etc/cwp-portwatch/config.toml
# The state as the service leaves it (StateDirectory= under DynamicUser=yes), so that both the
# remove (keeps it) and the purge (removes it) checks below can fail.
install -d -m 700 /var/lib/private/cwp-portwatch
printf '{}\n' >/var/lib/private/cwp-portwatch/state.json
printf '[[agent]]\nuuid = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"\n' >/etc/cwp-portwatch/watchlist.toml
dpkg -r cwp-portwatch
for f in $files; do
  [ "$f" = /etc/cwp-portwatch/config.toml ] && continue
  [ ! -e "$f" ] || fail "left after remove: $f"
done
grep -q 'edited by the operator' /etc/cwp-portwatch/config.toml || fail "remove lost the edited config"
[ -f /etc/cwp-portwatch/watchlist.toml ] || fail "remove lost the operator's watchlist"
[ -f /var/lib/private/cwp-portwatch/state.json ] || fail "remove lost the state"
if journalctl --list-catalog 2>/dev/null | grep -q 96e7064e0a524ac7b1e20a88b3782012; then
  fail "the catalog entries outlive the package"
fi

echo "== dpkg -P: nothing of the package stays"
dpkg -P cwp-portwatch
for f in $files; do [ ! -e "$f" ] || fail "left after purge: $f"; done
[ -f /etc/cwp-portwatch/watchlist.toml ] || fail "purge removed the operator's own watchlist"
[ ! -e /var/lib/private/cwp-portwatch ] || fail "purge left the state"
rm -f /etc/cwp-portwatch/watchlist.toml
rmdir /etc/cwp-portwatch
dpkg-query -W cwp-portwatch >/dev/null 2>&1 && fail "dpkg still knows cwp-portwatch"

catalog_id=96e7064e0a524ac7b1e20a88b3782012
echo "== rpm -i --nodeps: every file, and %post ran"
rpm -q cwp-portwatch >/dev/null 2>&1 && fail "rpm already knows cwp-portwatch; rpm -e it first"
journalctl --list-catalog 2>/dev/null | grep -q $catalog_id &&
  fail "the catalog knows $catalog_id before the .rpm is installed"
rpm -i --nodeps "$rpmfile"
rpm -q cwp-portwatch
for f in $(rpm -qlp "$rpmfile"); do [ -f "$f" ] || fail "not installed by the .rpm: $f"; done
got=$(/usr/bin/cwp-portwatch --version)
[ "$got" = "cwp-portwatch $version (commit $commit)" ] || fail "--version from the .rpm: $got"
# %post runs `journalctl --update-catalog`: without it the catalog file is there but unknown.
journalctl --list-catalog $catalog_id 2>/dev/null | grep -q $catalog_id ||
  fail "%post did not run: the catalog does not know $catalog_id"

echo "== rpm -U to release 2: the edited config.toml stays (noreplace), the new one beside it"
echo '# edited by the operator (rpm)' >>/etc/cwp-portwatch/config.toml
# Release 2 of the same files but a packaged config.toml that differs: the case where
# `noreplace` decides (a plain %config would move the edited file to .rpmsave instead).
cp packaging/config.toml "$work/config-v2.toml"
echo '# packaged by release 2' >>"$work/config-v2.toml"
{
  echo 'release = "2"'
  awk '/^\[package.metadata.generate-rpm\]/ {m = 1} m && /^assets = \[/ {a = 1} a {print} a && /^\]/ {exit}' \
    Cargo.toml | sed "s|source = \"packaging/config.toml\"|source = \"$work/config-v2.toml\"|"
} >"$work/release2.toml"
grep -q "$work/config-v2.toml" "$work/release2.toml" || fail "release 2: the config asset was not replaced"
cargo generate-rpm --metadata-overwrite "$work/release2.toml" -o "$work/release2.rpm"
rpm -qp --queryformat '%{RELEASE}\n' "$work/release2.rpm" | grep -qx 2 || fail "release 2 is not release 2"
rpm -U --nodeps "$work/release2.rpm"
rpm -q --queryformat '%{RELEASE}\n' cwp-portwatch | grep -qx 2 || fail "the upgrade did not happen"
grep -q 'edited by the operator (rpm)' /etc/cwp-portwatch/config.toml ||
  fail "the upgrade replaced the edited config.toml"
grep -q 'packaged by release 2' /etc/cwp-portwatch/config.toml.rpmnew ||
  fail "the upgrade did not put release 2's config.toml beside it as config.toml.rpmnew"
rm /etc/cwp-portwatch/config.toml.rpmnew

echo "== rpm -e: %preun and %postun ran, the edited config and the operator's files stay"
printf '[[agent]]\nuuid = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"\n' >/etc/cwp-portwatch/watchlist.toml
rpm -e --nodeps cwp-portwatch
rpm -q cwp-portwatch >/dev/null 2>&1 && fail "rpm still knows cwp-portwatch"
for f in $(rpm -qlp "$rpmfile"); do
  [ "$f" = /etc/cwp-portwatch/config.toml ] && continue
  [ ! -e "$f" ] || fail "left after rpm -e: $f"
done
grep -q 'edited by the operator (rpm)' /etc/cwp-portwatch/config.toml.rpmsave ||
  fail "rpm -e lost the edited config (no config.toml.rpmsave)"
[ -f /etc/cwp-portwatch/watchlist.toml ] || fail "rpm -e removed the operator's watchlist"
if journalctl --list-catalog 2>/dev/null | grep -q $catalog_id; then
  fail "%postun did not run: the catalog entries outlive the .rpm"
fi
rm -f /etc/cwp-portwatch/config.toml.rpmsave /etc/cwp-portwatch/watchlist.toml
rmdir /etc/cwp-portwatch
echo "== package check OK"
