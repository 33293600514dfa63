#!/usr/bin/env bash
# A short, bounded fuzz run of every target, for CI: replays the committed
# corpus, then fuzzes each target for SECONDS (default 20). Long runs: see
# fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-20}

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
# cargo-fuzz needs nightly features: a nightly toolchain if there is one,
# otherwise the stable compiler with RUSTC_BOOTSTRAP.
if cargo +nightly --version >/dev/null 2>&1; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi

# sled fsyncs on every durable write; a tmpfs keeps that cheap.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  export TMPDIR=/dev/shm
fi

for target in decode_record ops_vs_model damaged_db; do
  echo "--- fuzz smoke: $target (${seconds}s)"
  scratch=$(mktemp -d)
  log="$scratch.log"
  # New inputs go to a scratch corpus; the committed one is only read.
  status=0
  "${fuzz[@]}" run -O "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$seconds" -len_control=0 -max_len=4096 \
    -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done )' "$log" || true
  rm -rf "$scratch"
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "fuzz smoke: $target failed (exit $status); the input is under fuzz/artifacts/$target" >&2
    exit 1
  fi
  rm -f "$log"
done
