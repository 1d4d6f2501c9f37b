#!/usr/bin/env bash
# Cross-checks the simulator against the official Tencent Cloud Python SDK.
#
# - creates a venv under target/sdk-crosscheck-venv (reused on later runs) and installs
#   tencentcloud-sdk-python-yunjing, -cwp (the live API's client) and -sts from PyPI;
# - builds the debug binary and starts `cwp-portwatch simulate --listen 127.0.0.1:0
#   --scenario config/scenario-example.toml`;
# - reads the endpoint from the simulator's first stdout line (`listening on http://HOST:PORT`);
# - runs tests/sdk_crosscheck.py against it (with `python -O`: no check may be an `assert`);
#   the simulator is stopped on exit in every case.
#
# Exit status: that of the Python checks (0 all passed), 1 on set-up failures.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
venv="$target_dir/sdk-crosscheck-venv"
workdir="$(mktemp -d)"
sim_pid=""

cleanup() {
    if [[ -n "$sim_pid" ]] && kill -0 "$sim_pid" 2>/dev/null; then
        kill "$sim_pid" 2>/dev/null || true
        wait "$sim_pid" 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT
trap "exit 130" INT TERM

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating venv in $venv"
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import tencentcloud.yunjing, tencentcloud.cwp, tencentcloud.sts" 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        tencentcloud-sdk-python-yunjing tencentcloud-sdk-python-cwp tencentcloud-sdk-python-sts
fi
echo "SDK: tencentcloud-sdk-python $("$venv/bin/python" -c 'import tencentcloud; print(tencentcloud.__version__)')"

cargo build --quiet --locked --bin cwp-portwatch
sim=("$target_dir/debug/cwp-portwatch" simulate)

mkfifo "$workdir/out"
"${sim[@]}" --listen 127.0.0.1:0 --scenario config/scenario-example.toml >"$workdir/out" 2>"$workdir/sim.err" &
sim_pid=$!
exec 3<"$workdir/out"
first_line=""
if ! IFS= read -r -t 30 first_line <&3; then
    echo "the simulator printed no first line within 30 s" >&2
    cat "$workdir/sim.err" >&2
    exit 1
fi
# Keep draining its stdout so it never blocks on a full pipe.
cat <&3 >/dev/null &
endpoint="${first_line#listening on http://}"
if [[ "$endpoint" == "$first_line" ]]; then
    echo "unexpected first line from the simulator: $first_line" >&2
    exit 1
fi
echo "simulator at $endpoint (pid $sim_pid)"

status=0
# -O: the checks must not rely on `assert` (gone under optimisation).
"$venv/bin/python" -O tests/sdk_crosscheck.py "$endpoint" || status=$?
exit "$status"
