# Shared helpers for the local service scripts (sourced, not run).
# Every service keeps its data, logs and pid under $TRIBUTARY_SERVICES_DIR/<name> (ignored by git).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SERVICES_DIR="${TRIBUTARY_SERVICES_DIR:-$ROOT/.services}"
# Downloaded artifacts (jars) are cached outside the work tree so clean clones on the same machine reuse them.
CACHE_DIR="${TRIBUTARY_CACHE_DIR:-$HOME/.cache/tributary}"

svc_dir() { mkdir -p "$SERVICES_DIR/$1" && echo "$SERVICES_DIR/$1"; }

log() { printf '[%s] %s\n' "$1" "$2" >&2; }

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for NAME PIDFILE LOGFILE TIMEOUT_S CHECK_CMD...: poll CHECK_CMD until it succeeds; on failure show the log's tail.
wait_for() {
  local name=$1 pidfile=$2 logfile=$3 timeout=$4; shift 4
  local deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if ! pid_alive "$pidfile"; then
      log "$name" "process exited during start; last lines of $logfile:"
      tail -n 40 "$logfile" >&2 || true
      return 1
    fi
    sleep 0.5
  done
  log "$name" "not ready after ${timeout}s; last lines of $logfile:"
  tail -n 40 "$logfile" >&2 || true
  return 1
}

# stop_pid NAME PIDFILE: TERM, wait up to 20 s, then KILL.
stop_pid() {
  local name=$1 pidfile=$2
  if ! pid_alive "$pidfile"; then rm -f "$pidfile"; log "$name" "not running"; return 0; fi
  local pid; pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "$name" "did not stop in 20s, killing"; kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$pidfile"
  log "$name" "stopped"
}
