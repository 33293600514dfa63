#!/usr/bin/env bash
# The Python package's test suite: a fresh venv, `pip install ./python
# zohocrmsdk8-0 gunicorn pytest` (the wheel is built from source by maturin,
# fetched from PyPI like everything else), the `tokenstore` command (cargo
# build; test_gunicorn.py runs `tokenstore list` beside the app; set
# TOKENSTORE_BIN to use another build), then pytest on python/tests.
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
"$venv/bin/python" -m pip install --quiet ./python zohocrmsdk8-0 gunicorn pytest

if [[ -z "${TOKENSTORE_BIN:-}" ]]; then
  cargo build --quiet --bin tokenstore
  target_dir=$(cargo metadata --format-version 1 --no-deps | "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  export TOKENSTORE_BIN=$target_dir/debug/tokenstore
fi

# The tests must exercise the installed package, not the source tree.
(cd / && "$venv/bin/python" -c 'import tokenstore, tokenstore._native as n; print("testing", tokenstore.__file__)')

status=0
"$venv/bin/python" -m pytest python/tests -q -p no:cacheprovider "$@" || status=$?
if [[ $status -eq 5 ]]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
