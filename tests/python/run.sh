#!/usr/bin/env bash
# The Python package's test suite, on the wheel users install: a fresh venv;
# the wheel built by `bash python/build-wheel.sh` (abi3, manylinux, stripped,
# checked; or $TOKENSTORE_WHEEL, already built) installed into it with
# zohocrmsdk8-0 gunicorn celery pytest pyyaml from PyPI; `pip install uwsgi`
# (compiled from source: needs a C compiler and the Python headers, which
# are installed from Debian's packages when missing and possible; when it
# cannot be built, test_uwsgi.py says SKIPPED, and fails with CI=true); the
# `tokenstore` command (cargo build; test_gunicorn.py runs `tokenstore list`
# beside the app; set TOKENSTORE_BIN to use another build). Then pytest on
# python/tests, and the release workflow's smoke test, on a PATH without
# cargo or rustc: the installed wheel needs no Rust toolchain.
#
#   bash tests/python/run.sh            # the whole suite
#   bash tests/python/run.sh -k fork    # extra arguments go to pytest
#
# Needs python3 (>= 3.9, with venv) and the Rust toolchain. The venv lives in
# a temporary directory (or $TOKENSTORE_PY_VENV, kept between runs) and is
# removed afterwards unless kept; the wheel too (in it).
set -euo pipefail
cd "$(dirname "$0")/../.."

python=${PYTHON:-python3}
if [[ -n "${TOKENSTORE_PY_VENV:-}" ]]; then
  venv=$TOKENSTORE_PY_VENV
else
  venv=$(mktemp -d)/venv
  trap 'rm -rf "$(dirname "$venv")"' EXIT
fi

[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet zohocrmsdk8-0 gunicorn celery pytest pyyaml 'tomli; python_version < "3.11"'

if [[ -z "${TOKENSTORE_WHEEL:-}" ]]; then
  bash python/build-wheel.sh "$venv/wheel"
  wheels=("$venv"/wheel/tokenstore-*.whl)
  [[ ${#wheels[@]} -eq 1 ]] || { echo "expected one wheel in $venv/wheel: ${wheels[*]}" >&2; exit 1; }
  TOKENSTORE_WHEEL=${wheels[0]}
fi
export TOKENSTORE_WHEEL
# Reinstalled even when a kept venv holds the same version.
"$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps "$TOKENSTORE_WHEEL"

# uWSGI is C, compiled by `pip install uwsgi` against this Python's headers.
# A failure here is not the suite's: test_uwsgi.py reports it (SKIPPED, or a
# failure with CI=true) and the rest runs.
if [[ ! -x "$venv/bin/uwsgi" ]]; then
  include=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  if { [[ ! -f "$include/Python.h" ]] || ! command -v cc >/dev/null; } && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    # Debian's python3-dev holds the headers of Debian's python3 only.
    echo "installing a C compiler and the Python headers for uWSGI (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc python3-dev; } >/dev/null ||
      echo "apt-get could not install gcc python3-dev" >&2
  fi
  if ! "$venv/bin/python" -m pip install --quiet uwsgi >"$venv/uwsgi-build.log" 2>&1; then
    tail -20 "$venv/uwsgi-build.log" >&2
    echo "==================================================================" >&2
    echo "pip install uwsgi failed (log: $venv/uwsgi-build.log): test_uwsgi.py will say SKIPPED" >&2
    echo "==================================================================" >&2
  fi
fi

if [[ -z "${TOKENSTORE_BIN:-}" ]]; then
  cargo build --quiet --bin tokenstore
  target_dir=$(cargo metadata --format-version 1 --no-deps | "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  export TOKENSTORE_BIN=$target_dir/debug/tokenstore
fi

# The installed wheel needs no Rust toolchain: everything below runs on a
# PATH holding no cargo, rustc or rustup.
no_rust=$venv/bin
IFS=: read -ra dirs <<<"$PATH"
for dir in "${dirs[@]}"; do
  [[ -n $dir && ! -e $dir/cargo && ! -e $dir/rustc && ! -e $dir/rustup ]] && no_rust+=:$dir
done
if found=$(env PATH="$no_rust" sh -c 'command -v cargo || command -v rustc || command -v rustup'); then
  echo "the PATH for the tests still finds $found" >&2
  exit 1
fi
run() { env PATH="$no_rust" "$@"; }

# The tests must exercise the installed package, not the source tree.
(cd / && run "$venv/bin/python" -c 'import tokenstore, tokenstore._native as n; print("testing", tokenstore.__version__, tokenstore.__file__)')
echo "wheel: $TOKENSTORE_WHEEL; PATH without cargo, rustc: $no_rust"
run "$venv/bin/python" python/tests/wheel_smoke.py

status=0
# -rfEs: a skipped test says why (a server that could not be had), as
# failures and errors do.
run "$venv/bin/python" -m pytest python/tests -q -rfEs -p no:cacheprovider "$@" || status=$?
if [[ $status -eq 5 ]]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
