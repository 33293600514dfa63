#!/usr/bin/env bash
# The Python package's test suite: a fresh venv, `pip install ./python
# zohocrmsdk8-0 gunicorn celery pytest` (the wheel is built from source by
# maturin, fetched from PyPI like everything else), `pip install uwsgi`
# (compiled from source: needs a C compiler and the Python headers, which
# are installed from Debian's packages when missing and possible; when it
# cannot be built, test_uwsgi.py says SKIPPED, and fails with CI=true), the
# `tokenstore` command (cargo build; test_gunicorn.py runs `tokenstore list`
# beside the app; set TOKENSTORE_BIN to use another build), then pytest on
# python/tests.
#
#   bash tests/python/run.sh            # the whole suite
#   bash tests/python/run.sh -k fork    # extra arguments go to pytest
#
# Needs python3 (>= 3.9, with venv) and the Rust toolchain. The venv lives in
# a temporary directory (or $TOKENSTORE_PY_VENV, kept between runs) and is
# removed afterwards unless kept.
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
"$venv/bin/python" -m pip install --quiet ./python zohocrmsdk8-0 gunicorn celery pytest

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

# The tests must exercise the installed package, not the source tree.
(cd / && "$venv/bin/python" -c 'import tokenstore, tokenstore._native as n; print("testing", tokenstore.__file__)')

status=0
# -rfEs: a skipped test says why (a server that could not be had), as
# failures and errors do.
"$venv/bin/python" -m pytest python/tests -q -rfEs -p no:cacheprovider "$@" || status=$?
if [[ $status -eq 5 ]]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
