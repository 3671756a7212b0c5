#!/usr/bin/env bash
# Runs every fuzz target for SECS seconds (default 600), one after another, on one
# core, continuing past crashes (each is saved under fuzz/artifacts/<target>/).
# Needs a nightly toolchain and cargo-fuzz: cargo install cargo-fuzz
set -uo pipefail
cd "$(dirname "$0")"
SECS=${SECS:-600}
python3 seed.py
for t in ${TARGETS:-dsn_analyze batv_tag config_parse signature_verify milter_session}; do
  echo "== $t: ${SECS}s"
  cargo +nightly fuzz run -O "$t" -- -max_total_time="$SECS" -fork=1 -ignore_crashes=1 \
    -ignore_timeouts=1 -ignore_ooms=1 -timeout=10 -rss_limit_mb=2048 -max_len=262144 \
    -print_final_stats=1 2>&1 | tee "logs/$t.log" | grep -E "^#|crash|Timeout|ERROR|stat::" | tail -n 20
done
