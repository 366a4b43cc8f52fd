#!/usr/bin/env bash
# Local Schema Registry speaking Confluent's Schema Registry REST API, without Docker.
#
#   scripts/services/registry.sh install|start|stop|status|logs
#
# It runs Apicurio Registry (a Quarkus app) whose ccompat API is Confluent-compatible; clients use
#   http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7      (REGISTRY_PORT, default 8081)
# e.g. new SchemaRegistryClient({ baseURLs: ['http://127.0.0.1:8081/apis/ccompat/v7'] }).
#
# The prebuilt Quarkus distribution is published on Maven Central as
# io.apicurio:apicurio-registry-app:<version>:tar.gz:all (the fast-jar that Apicurio's own build
# assembles); `install` fetches it with Maven and unpacks it into $CACHE_DIR/registry-<version>/ (~170 MB).
# Apicurio 3.3.x needs Java 21+: REGISTRY_JAVA_HOME if set, else the newest JDK among JAVA_HOME,
# /usr/lib/jvm/* and PATH (Temurin 25 here); with only Java 17 it falls back to Apicurio 3.0.9.
# REGISTRY_VERSION overrides the version.
#
# Storage: H2. REGISTRY_STORAGE=file (default) keeps it under $(svc_dir registry)/data (one DB per version) so schema ids
# survive a restart (as Kafka's data does); REGISTRY_STORAGE=mem starts empty every time.
#
# Compatibility: Confluent's PUT /config {"compatibility": ...} (global) and PUT /config/<subject> map to
# Apicurio COMPATIBILITY rules (global / per artifact), which Apicurio enforces on register: an
# incompatible schema is refused with HTTP 409 (error_code 409). When no global rule was set, the default
# global level is REGISTRY_DEFAULT_COMPATIBILITY (BACKWARD, as in Confluent; Apicurio's own default is NONE),
# passed as apicurio.rules.global.compatibility.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=registry
PORT="${REGISTRY_PORT:-8081}"
# Quarkus' management interface (health, metrics); 0 = any free port, so it never collides with others.
MGMT_PORT="${REGISTRY_MGMT_PORT:-0}"
STORAGE="${REGISTRY_STORAGE:-file}"
# Global compatibility level when none was set through PUT /config: Confluent's default is BACKWARD
# (Apicurio's own is NONE). NONE | BACKWARD | BACKWARD_TRANSITIVE | FORWARD | FULL | ...
DEFAULT_COMPAT="${REGISTRY_DEFAULT_COMPATIBILITY:-BACKWARD}"
DIR="$(svc_dir "$NAME")"
PIDFILE="$DIR/registry.pid"
LOGFILE="$DIR/registry.log"
BASE_URL="http://127.0.0.1:$PORT/apis/ccompat/v7"

java_major() { # java_major JAVA_BIN: the feature version (17, 21, 25...) or nothing
  "$1" -version 2>&1 | sed -nE '1s/.*version "(1\.)?([0-9]+).*/\2/p'
}

# Sets JAVA and VERSION: the registry version to run and a java able to run it.
pick_java_and_version() {
  local candidates=() c best="" best_major=0 m
  [[ -n "${REGISTRY_JAVA_HOME:-}" ]] && candidates+=("$REGISTRY_JAVA_HOME/bin/java")
  [[ -n "${JAVA_HOME:-}" ]] && candidates+=("$JAVA_HOME/bin/java")
  for c in /usr/lib/jvm/*/bin/java; do candidates+=("$c"); done
  c="$(command -v java 2>/dev/null || true)"; [[ -n "$c" ]] && candidates+=("$c")
  for c in "${candidates[@]}"; do
    [[ -x "$c" ]] || continue
    m="$(java_major "$c")"; [[ -n "$m" ]] || continue
    # REGISTRY_JAVA_HOME, when set, wins whatever its version.
    if [[ -n "${REGISTRY_JAVA_HOME:-}" && "$c" == "$REGISTRY_JAVA_HOME/bin/java" ]]; then best=$c; best_major=$m; break; fi
    if ((m > best_major)); then best=$c; best_major=$m; fi
  done
  if [[ -z "$best" ]] || ((best_major < 17)); then
    log "$NAME" "needs Java 17+ (21+ for Apicurio 3.3); none found (set REGISTRY_JAVA_HOME)"; exit 1
  fi
  JAVA=$best
  if [[ -n "${REGISTRY_VERSION:-}" ]]; then
    VERSION=$REGISTRY_VERSION
  elif ((best_major >= 21)); then
    VERSION=3.3.3
  else
    VERSION=3.0.9 # Apicurio 3.0.x runs on Java 17
  fi
}

install() {
  local dest="$CACHE_DIR/registry-$VERSION"
  if [[ -f "$dest/.installed" ]]; then return 0; fi
  command -v mvn >/dev/null || { log "$NAME" "mvn is needed to fetch Apicurio Registry from Maven Central"; exit 1; }
  log "$NAME" "fetching io.apicurio:apicurio-registry-app:$VERSION:tar.gz:all into $dest"
  mkdir -p "$CACHE_DIR"
  local tmp; tmp="$(mktemp -d "$CACHE_DIR/registry-$VERSION.tmp.XXXXXX")"
  # dependency:get 2.8 with transitive=false fetches the file without reading its parent POM (not served
  # for some Apicurio versions, e.g. 3.0.9, where dependency:copy fails). A private local repository
  # keeps the path predictable; the tarball is deleted once unpacked.
  local repo="$CACHE_DIR/registry-m2"
  local tgz="$repo/io/apicurio/apicurio-registry-app/$VERSION/apicurio-registry-app-$VERSION-all.tar.gz"
  if ! mvn -B -q -Dstyle.color=never "-Dmaven.repo.local=$repo" org.apache.maven.plugins:maven-dependency-plugin:2.8:get \
    -Dtransitive=false "-Dartifact=io.apicurio:apicurio-registry-app:$VERSION:tar.gz:all" >&2 || [[ ! -f "$tgz" ]]; then
    rm -rf "$tmp"; log "$NAME" "download failed"; exit 1
  fi
  mkdir -p "$tmp/app"
  tar -xzf "$tgz" -C "$tmp/app"
  rm -f "$tgz"
  touch "$tmp/app/.installed"
  rm -rf "$dest"
  mv "$tmp/app" "$dest"
  rmdir "$tmp"
  log "$NAME" "installed Apicurio Registry $VERSION ($(du -sh "$dest" | cut -f1))"
}

runner_jar() { # fast-jar layout (3.1+) or uber-jar (3.0.x)
  local d="$CACHE_DIR/registry-$VERSION" j
  if [[ -f "$d/quarkus-run.jar" ]]; then echo "$d/quarkus-run.jar"; return; fi
  for j in "$d"/*-runner.jar; do [[ -f "$j" ]] && { echo "$j"; return; }; done
  log "$NAME" "no runnable jar in $d"; exit 1
}

ready() { curl -fsS -o /dev/null --max-time 2 "$BASE_URL/subjects"; }

start() {
  if pid_alive "$PIDFILE"; then log "$NAME" "already running (pid $(cat "$PIDFILE")) at $BASE_URL"; return 0; fi
  if port_open "$PORT"; then log "$NAME" "port $PORT is already in use by another process"; exit 1; fi
  pick_java_and_version
  install
  local jar datasource
  jar="$(runner_jar)"
  case "$STORAGE" in
    file) mkdir -p "$DIR/data"; datasource="jdbc:h2:file:$DIR/data/registry-$VERSION" ;; # per version: H2 schemas differ
    mem) datasource="jdbc:h2:mem:registry" ;;
    *) log "$NAME" "REGISTRY_STORAGE must be file or mem, not $STORAGE"; exit 1 ;;
  esac
  [[ -f "$LOGFILE" ]] && mv -f "$LOGFILE" "$LOGFILE.1"
  log "$NAME" "starting Apicurio Registry $VERSION on port $PORT (storage: $STORAGE, java: $JAVA)"
  (
    cd "$DIR" || exit 1
    exec setsid nohup "$JAVA" -Xmx512m -XX:+UseSerialGC \
      -Dquarkus.http.host=127.0.0.1 "-Dquarkus.http.port=$PORT" \
      -Dquarkus.management.host=127.0.0.1 "-Dquarkus.management.port=$MGMT_PORT" \
      -Dapicurio.storage.kind=sql -Dapicurio.storage.sql.kind=h2 "-Dapicurio.datasource.url=$datasource" \
      -Dapicurio.datasource.jdbc.initial-size=2 -Dapicurio.datasource.jdbc.min-size=2 -Dapicurio.datasource.jdbc.max-size=20 \
      "-Dapicurio.storage.snapshot.location=$DIR" \
      "-Dapicurio.rules.global.compatibility=$DEFAULT_COMPAT" \
      -Dapicurio.rest.deletion.group.enabled=true -Dapicurio.rest.deletion.artifact.enabled=true \
      -Dapicurio.rest.deletion.artifact-version.enabled=true -Dapicurio.rest.artifact.deletion.enabled=true \
      -jar "$jar" </dev/null >"$LOGFILE" 2>&1
  ) &
  echo $! >"$PIDFILE"
  if ! wait_for "$NAME" "$PIDFILE" "$LOGFILE" "${REGISTRY_START_TIMEOUT:-120}" ready; then
    stop_pid "$NAME" "$PIDFILE"
    exit 1
  fi
  log "$NAME" "ready at $BASE_URL (pid $(cat "$PIDFILE"))"
}

status() {
  if pid_alive "$PIDFILE"; then
    if ready; then echo "registry: running (pid $(cat "$PIDFILE"), port $PORT) at $BASE_URL"; return 0; fi
    echo "registry: starting (pid $(cat "$PIDFILE")), not answering yet"
    return 3
  fi
  echo "registry: stopped"
  return 3
}

case "${1:-}" in
  install) pick_java_and_version; install ;;
  start) start ;;
  stop) stop_pid "$NAME" "$PIDFILE" ;;
  status) status ;;
  logs) if [[ -f "$LOGFILE" ]]; then tail -n "${REGISTRY_LOG_LINES:-200}" "$LOGFILE"; else log "$NAME" "no log yet at $LOGFILE"; fi ;;
  *) echo "usage: $0 install|start|stop|status|logs" >&2; exit 2 ;;
esac
