#!/usr/bin/env bash
# Start, stop or show every local service the tests need (no Docker): Kafka (KRaft), a three-broker Kafka cluster,
# Valkey, a Valkey Cluster, Schema Registry; and MLflow (only when named: `services.sh start mlflow`, since its
# first install downloads ~150 MB from PyPI and only the MLflow test and `--mlflow` users need it).
# ClickHouse needs no service: the engine is embedded through chdb unless CLICKHOUSE_URL names a server.
# Usage: services.sh install|start|stop|status [kafka|kafka-cluster|valkey|valkey-cluster|registry|mlflow ...]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cmd="${1:-status}"; shift || true
names=("$@"); [[ ${#names[@]} -gt 0 ]] || names=(valkey valkey-cluster kafka kafka-cluster registry)
# Stop in reverse order: the registry keeps nothing in Kafka, but a clean shutdown order costs nothing.
if [[ "$cmd" == stop ]]; then for ((i = ${#names[@]} - 1; i >= 0; i--)); do r+=("${names[i]}"); done; names=("${r[@]}"); fi
rc=0
for n in "${names[@]}"; do
  [[ -f "$HERE/$n.sh" ]] || { echo "unknown service: $n (known: kafka kafka-cluster valkey valkey-cluster registry mlflow)" >&2; exit 2; }
  bash "$HERE/$n.sh" "$cmd" || rc=$?
done
exit "$rc"
