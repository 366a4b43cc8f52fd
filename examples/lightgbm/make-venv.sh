#!/usr/bin/env bash
# Makes (or refreshes) the Python environment the LightGBM example runs in and prints its python's path.
# Reruns are quick: nothing is installed when requirements.txt has not changed since the last install.
#   TRIBUTARY_PYTHON_VENV  where (default ~/.cache/tributary/python/lightgbm)
#   PYTHON                 the interpreter to build it with (default python3.11, else python3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${TRIBUTARY_PYTHON_VENV:-$HOME/.cache/tributary/python/lightgbm}
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
stamp=$venv/.requirements.sha256
want=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
if [[ ! -x $venv/bin/python || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  "$python" -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
  echo "$want" >"$stamp"
fi
echo "$venv/bin/python"
