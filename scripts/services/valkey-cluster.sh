#!/usr/bin/env bash
# A local Valkey Cluster from the same server binary as valkey.sh: three masters with a replica each, slots assigned,
# on their own ports (VALKEY_CLUSTER_PORT, default 7101, and the five after it). Name any node in --valkey.
# Usage: valkey-cluster.sh install|start|stop|status|logs|kill-node PORT|start-node PORT
# kill-node SIGKILLs one node (its replica takes over if it was a master); start-node brings it back with its
# cluster config, as a replica of whoever serves its slots now.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BASE="${VALKEY_CLUSTER_PORT:-7101}"
NODES=6
DIR="$(svc_dir valkey-cluster)"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

server_bin() { command -v valkey-server || command -v redis-server || true; }
cli_bin() { command -v valkey-cli || command -v redis-cli || true; }
ports() { seq "$BASE" $((BASE + NODES - 1)); }

# Asked of every node in turn: one may be down (kill-node) while the cluster serves.
cluster_ok() {
  local p
  for p in $(ports); do "$(cli_bin)" -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' && return 0; done
  return 1
}

# As valkey.sh: no persistence (the online store is rebuilt from Kafka); the cluster config survives in the node's dir.
launch() {
  local d="$DIR/$1"
  "$(server_bin)" --port "$1" --bind 127.0.0.1 --save "" --appendonly no --dir "$d" \
    --cluster-enabled yes --cluster-config-file "$d/nodes.conf" --cluster-node-timeout 2000 \
    --hash-max-listpack-entries 64 --daemonize yes --pidfile "$d/server.pid" --logfile "$d/server.log"
}

node_port() {
  [[ "${1:-}" =~ ^[0-9]+$ ]] && ((${1} >= BASE && ${1} < BASE + NODES)) || {
    echo "usage: $0 kill-node|start-node PORT (one of $BASE-$((BASE + NODES - 1)))" >&2; exit 2
  }
}

kill_node() {
  node_port "${1:-}"
  local pidfile="$DIR/$1/server.pid"
  pid_alive "$pidfile" || { log valkey-cluster "node $1 is not running"; return 0; }
  kill -9 "$(cat "$pidfile")"
  rm -f "$pidfile"
  log valkey-cluster "node $1 killed"
}

start_node() {
  node_port "${1:-}"
  if pid_alive "$DIR/$1/server.pid"; then log valkey-cluster "node $1 already running"; return 0; fi
  launch "$1"
  wait_for valkey-cluster "$DIR/$1/server.pid" "$DIR/$1/server.log" 20 "$(cli_bin)" -p "$1" ping || exit 1
  log valkey-cluster "node $1 started"
}

start() {
  bash "$HERE/valkey.sh" install
  if cluster_ok; then log valkey-cluster "already running (ports $BASE-$((BASE + NODES - 1)))"; return 0; fi
  local t0=$SECONDS nodes=()
  for p in $(ports); do
    if port_open "$p"; then log valkey-cluster "port $p is taken by another process: set VALKEY_CLUSTER_PORT"; exit 1; fi
  done
  for p in $(ports); do
    rm -rf "${DIR:?}/$p" && mkdir -p "$DIR/$p"
    launch "$p"
    nodes+=("127.0.0.1:$p")
  done
  for p in $(ports); do
    wait_for valkey-cluster "$DIR/$p/server.pid" "$DIR/$p/server.log" 20 "$(cli_bin)" -p "$p" ping || exit 1
  done
  "$(cli_bin)" --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1 || {
    log valkey-cluster "cluster create failed:"; tail -n 20 "$DIR/create.log" >&2; exit 1
  }
  for _ in $(seq 1 60); do cluster_ok && break; sleep 0.5; done
  cluster_ok || { log valkey-cluster "cluster not ok after 30s"; exit 1; }
  log valkey-cluster "running: 3 masters, 3 replicas on 127.0.0.1:$BASE-$((BASE + NODES - 1)) (started in $((SECONDS - t0))s)"
}

stop() {
  for p in $(ports); do
    [[ -f "$DIR/$p/server.pid" ]] && stop_pid "valkey-cluster:$p" "$DIR/$p/server.pid" 2>/dev/null
  done
  log valkey-cluster "stopped"
}

status() {
  if cluster_ok; then echo "valkey-cluster: running (ports $BASE-$((BASE + NODES - 1)))"; else echo "valkey-cluster: stopped"; exit 3; fi
}

case "${1:-}" in
  install) bash "$HERE/valkey.sh" install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  logs) for p in $(ports); do echo "== $p"; tail -n 10 "$DIR/$p/server.log"; done ;;
  kill-node) kill_node "${2:-}" ;;
  start-node) start_node "${2:-}" ;;
  *) echo "usage: $0 install|start|stop|status|logs|kill-node PORT|start-node PORT" >&2; exit 2 ;;
esac
