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

for target in decode_record ops_vs_model damaged_db wire_frames; do
  echo "--- fuzz smoke: $target (${seconds}s)"
  scratch=$(mktemp -d)
  log="$scratch.log"
  # ops_vs_model runs without leak detection, for one reason only: sled
  # 0.34's global IO thread pool spawns extra detached threads on demand
  # (sled-io-7 and up, when more than 7 tasks queue up while its threads are
  # busy, as when delete_tokens commits a large batch). Each ends by itself
  # seconds after going idle, long after the store is gone; sled can neither
  # stop nor join them. One ending while LeakSanitizer checks (after an
  # input, or at exit) is reported as a leak of its thread-local destructor
  # list (__cxa_thread_atexit_impl) that no input reproduces. -detect_leaks=0
  # stops libFuzzer's checks after inputs, ASan's detect_leaks=0 the one at
  # exit. See fuzz/README.md, "Leak detection".
  leaks=()
  asan_options=${ASAN_OPTIONS:-}
  if [ "$target" = ops_vs_model ]; then
    leaks=(-detect_leaks=0)
    asan_options="${asan_options:+$asan_options:}detect_leaks=0"
  fi
  # New inputs go to a scratch corpus; the committed one is only read.
  status=0
  ASAN_OPTIONS=$asan_options "${fuzz[@]}" run -O "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$seconds" -len_control=0 -max_len=4096 \
    -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1 ${leaks[@]+"${leaks[@]}"} \
    >"$log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done )' "$log" || true
  rm -rf "$scratch"
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "fuzz smoke: $target failed (exit $status); the input is under fuzz/artifacts/$target" >&2
    exit 1
  fi
  rm -f "$log"
done
