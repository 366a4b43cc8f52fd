#!/usr/bin/env bash
# A local Valkey Cluster from the same server binary as valkey.sh: three masters with a replica each, slots assigned,
# on their own ports (VALKEY_CLUSTER_PORT, default 7101, and the five after it). Name any node in --valkey.
# Usage: valkey-cluster.sh install|start|stop|status|logs
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BASE="${VALKEY_CLUSTER_PORT:-7101}"
NODES=6
DIR="$(svc_dir valkey-cluster)"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

server_bin() { command -v valkey-server || command -v redis-server || true; }
cli_bin() { command -v valkey-cli || command -v redis-cli || true; }
ports() { seq "$BASE" $((BASE + NODES - 1)); }

cluster_ok() { "$(cli_bin)" -p "$BASE" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; }

start() {
  bash "$HERE/valkey.sh" install
  if cluster_ok; then log valkey-cluster "already running (ports $BASE-$((BASE + NODES - 1)))"; return 0; fi
  local t0=$SECONDS nodes=()
  for p in $(ports); do
    if port_open "$p"; then log valkey-cluster "port $p is taken by another process: set VALKEY_CLUSTER_PORT"; exit 1; fi
  done
  for p in $(ports); do
    local d="$DIR/$p"
    rm -rf "$d" && mkdir -p "$d"
    # As valkey.sh: no persistence (the online store is rebuilt from Kafka), a fresh cluster per start.
    "$(server_bin)" --port "$p" --bind 127.0.0.1 --save "" --appendonly no --dir "$d" \
      --cluster-enabled yes --cluster-config-file "$d/nodes.conf" --cluster-node-timeout 2000 \
      --hash-max-listpack-entries 64 --daemonize yes --pidfile "$d/server.pid" --logfile "$d/server.log"
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
  *) echo "usage: $0 install|start|stop|status|logs" >&2; exit 2 ;;
esac
