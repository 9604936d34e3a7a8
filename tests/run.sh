#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a used one.
#
# Installs what the tests need, only when it is missing (Debian packages:
# mosquitto, chromium, victoria-metrics (it takes the InfluxDB v2 write
# API), postgresql (for the alert store), libxml2-utils (xmllint, for CAP),
# and the headers librdkafka builds against; from
# crates.io: the Tansu Kafka broker; from npm: Node-RED, the benchmark
# baseline, and oidc-provider, the OpenID provider of the sign-on tests;
# from PyPI: Bytewax, Pathway and Apache Flink, the benchmark's peers),
# then checks formatting and lints and
# runs every test. Tests start their own brokers on free loopback ports.
# Then a smoke run of the benchmark suite (benches/suite.sh --smoke;
# IOC_BENCH_SMOKE=0 skips), and fuzzes the telemetry decoder for
# IOC_FUZZ_SECONDS (default 60; 0 skips) with cargo-fuzz (installed from
# crates.io if absent).
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
installed() { dpkg -s "$1" >/dev/null 2>&1; }

packages=()
have mosquitto || packages+=(mosquitto)
have chromium || packages+=(chromium)
have victoria-metrics || packages+=(victoria-metrics)
# The alert store's tests run PostgreSQL on a free port (initdb in a temp dir).
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || packages+=(postgresql)
# systemd-analyze verifies the units in deploy/systemd.
have systemd-analyze || packages+=(systemd)
# xmllint checks CAP messages against the OASIS CAP 1.2 schema.
have xmllint || packages+=(libxml2-utils)
# The benchmark suite's baseline runs Node-RED (from npm) on Node.js.
have node || packages+=(nodejs)
have npm || packages+=(npm)
# The benchmark suite's peers (benches/peers/): Bytewax and Pathway in
# Python virtual environments, Flink's Java job compiled with javac.
installed python3-venv || packages+=(python3-venv)
have javac || packages+=(default-jdk-headless)
# librdkafka (built from source by rdkafka-sys) needs these; libFuzzer, g++.
for p in libssl-dev zlib1g-dev pkg-config make g++; do
  installed "$p" || packages+=("$p")
done
if [ ${#packages[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "tests/run.sh: installing ${packages[*]} from Debian's packages"
  $sudo apt-get update -qq
  # Do not start system services: tests start their own instances.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# The Kafka-protocol broker the Kafka tests run against.
if ! have tansu; then
  echo "tests/run.sh: installing tansu from crates.io (once; takes a while)"
  cargo install --locked tansu --features dynostore,libsql
fi

# Node-RED, for the benchmark suite's baseline (benches/node-red/).
export IOC_NODE_RED_HOME="${IOC_NODE_RED_HOME:-$HOME/.cache/ioc-tools/node-red}"
if [ ! -f "$IOC_NODE_RED_HOME/node_modules/node-red/red.js" ]; then
  echo "tests/run.sh: installing node-red from npm (once)"
  mkdir -p "$IOC_NODE_RED_HOME"
  npm install --prefix "$IOC_NODE_RED_HOME" --no-audit --no-fund --loglevel=error node-red@4.1.15 >/dev/null
fi

# A real OpenID Connect provider for the single sign-on tests.
export IOC_OIDC_PROVIDER_HOME="${IOC_OIDC_PROVIDER_HOME:-$HOME/.cache/ioc-tools/oidc-provider}"
if [ ! -f "$IOC_OIDC_PROVIDER_HOME/node_modules/oidc-provider/package.json" ]; then
  echo "tests/run.sh: installing oidc-provider from npm (once)"
  mkdir -p "$IOC_OIDC_PROVIDER_HOME"
  npm install --prefix "$IOC_OIDC_PROVIDER_HOME" --no-audit --no-fund --loglevel=error oidc-provider@8.8.1 >/dev/null
fi

# The peers of the benchmark suite (Bytewax, Pathway, Apache Flink), from
# PyPI at pinned versions, each in its own virtual environment.
export IOC_PEERS_HOME="${IOC_PEERS_HOME:-$HOME/.cache/ioc-peers}"
benches/peers/install.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "\nworkspace: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"

# A seconds-long run of the benchmark harness at tiny sizes: proves every
# benchmark still runs and reports (no figure is judged). IOC_BENCH_SMOKE=0 skips.
if [ "$status" -eq 0 ] && [ "${IOC_BENCH_SMOKE:-1}" != 0 ]; then
  if benches/suite.sh --smoke >"$log" 2>&1; then
    echo "benchmarks: smoke run of the suite passed ($(grep -c '^== ' "$log") benchmarks, report in target/bench/suite.json)"
  else
    tail -60 "$log"
    echo "benchmarks: the smoke run of benches/suite.sh failed"
    status=1
  fi
fi

fuzz_seconds="${IOC_FUZZ_SECONDS:-60}"
if [ "$status" -eq 0 ] && [ "$fuzz_seconds" -gt 0 ]; then
  if fuzz/run.sh "$fuzz_seconds" >"$log" 2>&1; then
    echo "fuzz: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$log"), no crash"
  else
    tail -60 "$log"
    echo "fuzz: the decoder failed on an input; it is in fuzz/artifacts/decode/ (replay: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run decode <file>)"
    status=1
  fi
fi
exit "$status"
