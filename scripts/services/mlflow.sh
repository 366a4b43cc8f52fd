#!/usr/bin/env bash
# Local MLflow tracking server and model registry (what `--mlflow URL` logs to), without Docker.
#
#   scripts/services/mlflow.sh install|start|stop|status|logs
#
# `install` puts mlflow (PyPI, version MLFLOW_VERSION) into a venv under $CACHE_DIR/mlflow-<version>/: the first
# install downloads ~150 MB of wheels (a minute or two); pip's cache makes a reinstall take seconds, and an
# installed venv is reused as it is. Needs python3 (3.10+) with venv.
# `start` runs `mlflow server` on 127.0.0.1:$MLFLOW_PORT (default 5000) with a SQLite backend and a local artifact
# folder under $(svc_dir mlflow), artifacts served through the server (the mlflow-artifacts proxy), so clients need
# nothing but HTTP. MLFLOW_STORAGE=file (default) keeps runs across restarts; mem starts empty every time.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=mlflow
VERSION="${MLFLOW_VERSION:-3.17.2}"
PORT="${MLFLOW_PORT:-5000}"
STORAGE="${MLFLOW_STORAGE:-file}"
DIR="$(svc_dir "$NAME")"
PIDFILE="$DIR/server.pid"
LOGFILE="$DIR/server.log"
VENV="$CACHE_DIR/mlflow-$VERSION"
BASE_URL="http://127.0.0.1:$PORT"

install() {
  if [[ -f "$VENV/.installed" ]]; then return 0; fi
  command -v python3 >/dev/null || { log "$NAME" "python3 is needed (3.10+)"; exit 1; }
  local t0=$SECONDS tmp
  mkdir -p "$CACHE_DIR"
  tmp="$(mktemp -d "$CACHE_DIR/mlflow-$VERSION.tmp.XXXXXX")"
  log "$NAME" "installing mlflow==$VERSION from PyPI into $VENV"
  # The venv is built under its final path (scripts in it hold absolute paths), so the old one goes first.
  rm -rf "$VENV"
  if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q --disable-pip-version-check "mlflow==$VERSION"; } >"$tmp/pip.log" 2>&1; then
    tail -n 30 "$tmp/pip.log" >&2; rm -rf "$tmp" "$VENV"; log "$NAME" "pip install mlflow==$VERSION failed"; exit 1
  fi
  rm -rf "$tmp"
  touch "$VENV/.installed"
  log "$NAME" "installed mlflow $VERSION in $((SECONDS - t0))s ($(du -sh "$VENV" | cut -f1))"
}

ready() { curl -fsS -o /dev/null --max-time 2 "$BASE_URL/health"; }

start() {
  if pid_alive "$PIDFILE"; then log "$NAME" "already running (pid $(cat "$PIDFILE")) at $BASE_URL"; return 0; fi
  if port_open "$PORT"; then log "$NAME" "port $PORT is already in use by another process: set MLFLOW_PORT"; exit 1; fi
  install
  local data
  case "$STORAGE" in
    file) data="$DIR/data" ;;
    mem) data="$DIR/data-mem"; rm -rf "$data" ;;
    *) log "$NAME" "MLFLOW_STORAGE must be file or mem, not $STORAGE"; exit 1 ;;
  esac
  mkdir -p "$data/artifacts"
  [[ -f "$LOGFILE" ]] && mv -f "$LOGFILE" "$LOGFILE.1"
  log "$NAME" "starting mlflow $VERSION on port $PORT (storage: $STORAGE, $data)"
  local t0=$SECONDS
  (
    cd "$DIR" || exit 1
    # One worker: the tests' load is a few requests; each gunicorn/uvicorn worker costs ~200 MB.
    exec setsid nohup "$VENV/bin/mlflow" server --host 127.0.0.1 --port "$PORT" --workers 1 \
      --backend-store-uri "sqlite:///$data/mlflow.db" --serve-artifacts --artifacts-destination "$data/artifacts" \
      </dev/null >"$LOGFILE" 2>&1
  ) &
  echo $! >"$PIDFILE"
  if ! wait_for "$NAME" "$PIDFILE" "$LOGFILE" "${MLFLOW_START_TIMEOUT:-120}" ready; then
    stop_pid "$NAME" "$PIDFILE"
    exit 1
  fi
  log "$NAME" "ready at $BASE_URL (pid $(cat "$PIDFILE"), started in $((SECONDS - t0))s)"
}

status() {
  if pid_alive "$PIDFILE"; then
    if ready; then echo "mlflow: running (pid $(cat "$PIDFILE"), port $PORT) at $BASE_URL"; return 0; fi
    echo "mlflow: starting (pid $(cat "$PIDFILE")), not answering yet"
    return 3
  fi
  echo "mlflow: stopped"
  return 3
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop_pid "$NAME" "$PIDFILE" ;;
  status) status ;;
  logs) if [[ -f "$LOGFILE" ]]; then tail -n "${MLFLOW_LOG_LINES:-200}" "$LOGFILE"; else log "$NAME" "no log yet at $LOGFILE"; fi ;;
  *) echo "usage: $0 install|start|stop|status|logs" >&2; exit 2 ;;
esac
