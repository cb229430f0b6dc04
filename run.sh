#!/usr/bin/env bash
# One entry point for the README's quick start. Each command sets up (or updates) the
# virtual environment itself, from the pinned constraints, then runs.
#   ./run.sh demo [ARGS]   live demo: Gradio UI on the bundled model and synthetic demo video
#   ./run.sh test [ARGS]   the test suite (what .ci/run calls)
#   ./run.sh py ARGS       any python command inside the environment
set -euo pipefail
cd "$(dirname "$0")"
VENV=${PAGKD_VENV:-.venv}
PY=${PYTHON:-python3}

ensure_venv() {
  local stamp="$VENV/.pagkd-stamp" want
  want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return; fi
  echo "[setup] creating/updating $VENV (pinned by constraints.txt; first time takes a few minutes)" >&2
  if [[ ! -x "$VENV/bin/python" ]]; then
    # torch's Linux wheels bring CUDA libraries: the environment takes about 7.5 GB. Say so
    # up front rather than let pip die half-way with "No space left on device".
    local free_gb
    free_gb=$(df -Pk "$(dirname "$VENV")" | awk 'NR==2 {print int($4 / 1048576)}')
    if ((free_gb < 8)); then
      echo "error: the environment needs about 8 GB free next to $VENV, ${free_gb} GB is; free some space (or set PAGKD_VENV to a path on a larger disk) and run again" >&2
      exit 1
    fi
    "$PY" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # ray: optional for users, installed here so the tests of `evaluate --ray` run rather than skip
  "$VENV/bin/python" -m pip install -q -c constraints.txt -e '.[dev,ray]'
  echo "$want" > "$stamp"
}

cmd=${1:-}; shift || true
case "$cmd" in
  demo) ensure_venv; exec "$VENV/bin/python" -m stream ui "$@" ;;
  test) ensure_venv; exec "$VENV/bin/python" -m pytest -q "$@" ;;
  py)   ensure_venv; exec "$VENV/bin/python" "$@" ;;
  *) echo "usage: ./run.sh demo|test|py [ARGS]" >&2; exit 2 ;;
esac
