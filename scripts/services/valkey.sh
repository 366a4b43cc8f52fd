#!/usr/bin/env bash
# Local Valkey-protocol server: valkey-server where the machine has it, else Debian's redis-server.
# Usage: valkey.sh install|start|stop|status|logs     Port: VALKEY_PORT (default 6379)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT="${VALKEY_PORT:-6379}"
DIR="$(svc_dir valkey)"
PIDFILE="$DIR/server.pid"
LOGFILE="$DIR/server.log"

server_bin() { command -v valkey-server || command -v redis-server || true; }
cli_bin() { command -v valkey-cli || command -v redis-cli || true; }

install() {
  if [[ -n "$(server_bin)" ]]; then return 0; fi
  log valkey "installing redis-server from Debian (no valkey-server package here)"
  local t0=$SECONDS
  if ! { apt-get install -y -q redis-server >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null; }; }; then
    log valkey "apt-get install redis-server failed: install valkey-server or redis-server (>= 7) yourself"; exit 1
  fi
  log valkey "installed in $((SECONDS - t0))s"
}

ping() { "$(cli_bin)" -p "$PORT" ping | grep -q PONG; }

start() {
  install
  if pid_alive "$PIDFILE" && port_open "$PORT"; then log valkey "already running (pid $(cat "$PIDFILE"), port $PORT)"; return 0; fi
  if port_open "$PORT"; then log valkey "port $PORT is taken by another process: set VALKEY_PORT"; exit 1; fi
  local t0=$SECONDS
  # No persistence: Valkey is the online store, rebuilt from Kafka; tests want a clean server per start.
  # Entity hashes beyond 64 fields as hash tables: a ranking HMGETs ~80 tile fields per entity, and in a listpack
  # (the default up to 512 entries) each field is a linear scan (measured: 200 -> 60 us per HMGET, bench rank).
  "$(server_bin)" --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR" \
    --hash-max-listpack-entries 64 --daemonize yes --pidfile "$PIDFILE" --logfile "$LOGFILE"
  for _ in $(seq 1 20); do [[ -f "$PIDFILE" ]] && break; sleep 0.1; done
  wait_for valkey "$PIDFILE" "$LOGFILE" 20 ping || exit 1
  log valkey "running on 127.0.0.1:$PORT ($(basename "$(server_bin)"), started in $((SECONDS - t0))s)"
}

status() {
  if pid_alive "$PIDFILE" && ping 2>/dev/null; then echo "valkey: running (pid $(cat "$PIDFILE"), port $PORT)"; else echo "valkey: stopped"; exit 3; fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop_pid valkey "$PIDFILE" ;;
  status) status ;;
  logs) tail -n 50 "$LOGFILE" ;;
  *) echo "usage: $0 install|start|stop|status|logs" >&2; exit 2 ;;
esac
