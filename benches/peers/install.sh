#!/usr/bin/env bash
# Installs the peers of benches/peers.rs, each in its own virtual
# environment under $IOC_PEERS_HOME (default ~/.cache/ioc-peers), at pinned
# versions, only when missing: Bytewax and Pathway from PyPI, and Apache
# Flink (PyPI's apache-flink carries Flink's runtime jars), against which
# benches/peers/flink/PeersFlink.java is compiled. Needs Debian's python3,
# python3-venv and a JDK (tests/run.sh installs them).
set -euo pipefail
cd "$(dirname "$0")"
home="${IOC_PEERS_HOME:-$HOME/.cache/ioc-peers}"
mkdir -p "$home"

# venv NAME PACKAGE==VERSION MODULE
venv() {
  local name=$1 package=$2 module=$3
  local dir="$home/$name"
  if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$package" ]; then
    return
  fi
  echo "benches/peers/install.sh: installing $package from PyPI (once)"
  rm -rf "$dir"
  /usr/bin/python3 -m venv "$dir"
  if ! "$dir/bin/pip" install --quiet --disable-pip-version-check "$package" >"$dir.log" 2>&1; then
    cat "$dir.log"
    echo "benches/peers/install.sh: installing $package failed" >&2
    return 1
  fi
  "$dir/bin/python" -c "import $module"
  echo "$package" >"$dir/.installed"
}

venv bytewax bytewax==0.21.1 bytewax &
venv pathway pathway==0.33.0 pathway &
venv flink apache-flink==1.20.3 pyflink &
wait %1 && wait %2 && wait %3

jar="$home/flink/peers-flink.jar"
if [ ! -f "$jar" ] || [ flink/PeersFlink.java -nt "$jar" ]; then
  lib=$(echo "$home"/flink/lib/python3.*/site-packages/pyflink/lib)
  build=$(mktemp -d)
  javac -nowarn -cp "$lib/*" -d "$build" flink/PeersFlink.java 2>&1 | grep -v '^Note:' || true
  jar cf "$jar" -C "$build" .
  rm -rf "$build"
fi
