#!/usr/bin/env bash
# Installs oha (an open-loop HTTP load generator, Rust) from crates.io into the tool cache, for the rank benchmark's
# paced phases; prints its path. The bench runs without it (its Node generator) and says which one ran.
# Building it takes a few minutes on two cores, once per machine (the cache is outside the clone).
# Usage: scripts/tools/oha.sh [install|path]
set -euo pipefail
VERSION=1.16.0
CACHE_DIR="${TRIBUTARY_CACHE_DIR:-$HOME/.cache/tributary}"
ROOT="$CACHE_DIR/tools/oha-$VERSION"
BIN="$ROOT/bin/oha"

case "${1:-install}" in
  path) [[ -x "$BIN" ]] && echo "$BIN" ;;
  install)
    if [[ ! -x "$BIN" ]]; then
      command -v cargo >/dev/null || { echo "oha: needs cargo (Rust) to build it from crates.io" >&2; exit 1; }
      echo "[oha] cargo install oha@$VERSION (a few minutes)" >&2
      cargo install oha --version "$VERSION" --locked --root "$ROOT" >&2
    fi
    echo "$BIN"
    ;;
  *) echo "usage: $0 [install|path]" >&2; exit 2 ;;
esac
