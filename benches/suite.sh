#!/usr/bin/env bash
# The standard benchmark suite: one command, one JSON file, one summary.
#
#   benches/suite.sh           the full suite (about 5 minutes plus the build)
#   benches/suite.sh --smoke   a seconds-long run at tiny sizes with the test
#                              profile, proving the harness works (CI runs it;
#                              its figures mean nothing)
#
# Each benchmark writes its JSON to target/bench/suite/; the report merges
# them into target/bench/suite.json (with the machine, the commit and every
# target from BENCHMARKS.md, met or not, and the ratios to the Node-RED
# baseline and to the peers) and prints a summary. Needs Mosquitto, Tansu,
# Node-RED and the peers (benches/peers/install.sh), as tests/run.sh
# installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=false
if [ "${1:-}" = "--smoke" ]; then smoke=true; fi
out=target/bench/suite
rm -rf "$out"
mkdir -p "$out"

if $smoke; then
  cargo=(cargo test --quiet --locked)
else
  cargo=(cargo bench --quiet --locked)
fi

# run NAME PACKAGE BENCH ARGS...
run() {
  local name=$1 package=$2 bench=$3
  shift 3
  echo "== $name: $bench $*"
  IOC_BENCH_OUT="$PWD/$out/$name.json" "${cargo[@]}" -p "$package" --bench "$bench" -- "$@"
}

if $smoke; then
  run engine ioc engine 10000 100000 2
  run kafka-ingest ioc kafka_ingest 20000 1000 2
  run e2e-mqtt-10k ioc e2e 1000 3 1000 1
  run e2e-kafka ioc e2e --kafka 1000 3 1000
  run influx-sink ioc influx_sink 20000 1000
  run alert-store ioc alert_store 50
  run geo ioc geo 20000
  run ws-fanout-100 ioc ws_fanout 10 2000 1 300
  run e2e-node-red-10k ioc e2e --node-red 1000 3 1000 1
  run peers ioc peers 2000 60000 100
else
  run engine ioc engine 100000 2000000 2
  run kafka-ingest ioc kafka_ingest 1000000 10000 4
  run e2e-mqtt-10k ioc e2e 10000 20 100000 1
  run e2e-mqtt-50k ioc e2e 50000 20 100000 1
  run e2e-kafka ioc e2e --kafka 0 20 100000
  run influx-sink ioc influx_sink 1000000 10000
  run alert-store ioc alert_store 2000
  run alert-store-postgres ioc alert_store 2000 --postgres
  run geo ioc geo 2000000
  run ws-fanout-100 ioc ws_fanout 100 12000 10 2000
  run ws-fanout-1000 ioc ws_fanout 1000 1000 10 2000
  # The baseline: Node-RED on the same broker with the same loads.
  run e2e-node-red-10k ioc e2e --node-red 10000 20 100000 1
  run e2e-node-red-50k ioc e2e --node-red 50000 20 100000 1
  # The peers (Bytewax, Pathway, Flink) on one workload: benches/peers.rs.
  run peers ioc peers 100000 3000000 2
fi

report_args=("$PWD/$out")
if $smoke; then report_args+=(--smoke); fi
"${cargo[@]}" -p ioc --bench suite_report -- "${report_args[@]}"
