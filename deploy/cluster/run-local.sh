#!/usr/bin/env bash
# A 3-process ioc cluster on this machine: Mosquitto and PostgreSQL from
# Debian's packages (started here when they are not running), three ioc
# processes on http://127.0.0.1:8080, :8081 and :8082, each showing the
# whole province while the simulator (on process 0) publishes. Ctrl-C
# stops them all.
#
#   deploy/cluster/run-local.sh            # builds, starts, waits
#   IOC_DATABASE=postgres://... deploy/cluster/run-local.sh   # your own database
#
# Logs: target/cluster/ioc-{0,1,2}.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=target/cluster
mkdir -p "$dir"
processes=3
mqtt_port=${IOC_MQTT_PORT:-1883}

if ! (exec 3<>"/dev/tcp/127.0.0.1/$mqtt_port") 2>/dev/null; then
  command -v mosquitto >/dev/null || { echo "mosquitto is missing: apt-get install mosquitto" >&2; exit 1; }
  mosquitto -p "$mqtt_port" -d
  echo "started Mosquitto on port $mqtt_port"
fi

database=${IOC_DATABASE:-}
if [ -z "$database" ]; then
  [ "$(id -u)" = 0 ] || { echo "run as root to start Debian's PostgreSQL, or give IOC_DATABASE=postgres://..." >&2; exit 1; }
  version=$(ls /usr/lib/postgresql | sort -n | tail -1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
  runuser -u postgres -- psql -qtc "SELECT 1 FROM pg_roles WHERE rolname = 'ioc'" | grep -q 1 \
    || runuser -u postgres -- psql -qc "CREATE USER ioc PASSWORD 'ioc'"
  runuser -u postgres -- psql -qtc "SELECT 1 FROM pg_database WHERE datname = 'ioc_cluster'" | grep -q 1 \
    || runuser -u postgres -- createdb -O ioc ioc_cluster
  database=postgres://ioc:ioc@127.0.0.1:5432/ioc_cluster
fi

cargo build --release --bin ioc
hosts=$(seq 0 $((processes - 1)) | sed 's/.*/"127.0.0.1:710&"/' | paste -sd, -)
sed -e "s|^hosts = .*|hosts = [$hosts]|" \
    -e "s|^url = \"mqtt://mosquitto:1883\"|url = \"mqtt://127.0.0.1:$mqtt_port\"|" \
    -e "s|^database = .*|database = \"$database\"|" \
    -e "s|^dir = \"/var/lib/ioc/state\"|dir = \"$dir/state\"|" \
    deploy/cluster/ioc.toml > "$dir/ioc.toml"
cat >> "$dir/ioc.toml" <<TOML
[dead_letter]
file = "$dir/dead-letters.jsonl"
TOML
# Kafka and the time series need their servers: off here.
export IOC_KAFKA__ENABLED=false IOC_INFLUX__ENABLED=false
token=${IOC_HTTP__ADMIN_TOKEN:-$(head -c 24 /dev/urandom | base64 | tr -d '/+=')}
export IOC_HTTP__ADMIN_TOKEN=$token

pids=()
stop() {
  trap - INT TERM
  echo "stopping the cluster"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  exit 0
}
trap stop INT TERM
# Each in a session of its own: Ctrl-C reaches this script, which stops
# them once (a second signal would make ioc force its exit).
for p in $(seq 0 $((processes - 1))); do
  IOC_CLUSTER__PROCESS=$p IOC_HTTP__LISTEN=127.0.0.1:808$p \
    setsid target/release/ioc run --config "$dir/ioc.toml" > "$dir/ioc-$p.log" 2>&1 &
  pids+=($!)
done
for p in $(seq 0 $((processes - 1))); do
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/808$p") 2>/dev/null && break
    kill -0 "${pids[$p]}" 2>/dev/null || { echo "process $p stopped; see $dir/ioc-$p.log" >&2; tail -5 "$dir/ioc-$p.log" >&2; stop; exit 1; }
    sleep 0.1
  done
done
echo
for p in $(seq 0 $((processes - 1))); do
  echo "  process $p: http://127.0.0.1:808$p/#token=$token"
done
echo "  (each shows the whole province; Ctrl-C stops the cluster; logs in $dir/)"
echo
wait -n "${pids[@]}" || true
echo "a process stopped (see $dir/ioc-*.log); stopping the others"
stop
