#!/usr/bin/env bash
# Fuzzes the telemetry decoder for a bounded time: fuzz/run.sh [seconds] (default 60).
#
# Uses cargo-fuzz (installed from crates.io if absent) with libFuzzer and
# AddressSanitizer. cargo-fuzz passes nightly-only compiler flags; the
# project's own (stable) compiler accepts them with RUSTC_BOOTSTRAP=1, so no
# second toolchain is needed. Findings are written to fuzz/artifacts/decode/; the
# corpus grows in fuzz/corpus/decode/ (not committed), seeded from
# fuzz/seeds/decode/.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz from crates.io"
    cargo install --locked cargo-fuzz
fi

export RUSTC_BOOTSTRAP=1
mkdir -p corpus/decode
cargo fuzz run decode corpus/decode seeds/decode -- \
    -max_total_time="$seconds" -max_len=4096 -print_final_stats=1
