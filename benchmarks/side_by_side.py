"""Bare vLLM, Embassy and LiteLLM's proxy side by side, in one run, on this machine.

The same streaming requests (the prompts of graph_overhead.py, max_tokens 64,
temperature 0) at concurrency 1, 8 and 32 against:

- vLLM's own OpenAI server (the baseline);
- LiteLLM's proxy (PyPI `litellm[proxy]`) in front of that same server, without a cache
  and with its in-memory exact-match cache (`cache_params.type: local`, its fastest);
- the Embassy graph (guard in and out, cache, retriever, the same model and engine
  arguments in its own vLLM), with `Cache-Control: no-cache, no-store` and with its
  semantic cache on.

The prompts repeat, so with a cache most requests are hits after the first of each. Every
figure is printed as a ratio to bare vLLM at the same concurrency.

LiteLLM is not one of Embassy's dependencies: it is installed into its own virtual
environment (`.venv-litellm`, made on first use; `--litellm PATH` to use another).

    .venv/bin/python benchmarks/side_by_side.py [--rounds 1] [--requests 16 48 64]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import graph_overhead as go  # noqa: E402  (the load generator and server starters)
from deployments.llm.core import VLLMEngine  # noqa: E402
from embassy import stack  # noqa: E402
from embassy.settings import PROJECT_ROOT, load_settings  # noqa: E402
from embassy.tenants import create_key  # noqa: E402
from models.prepare import prepare_model  # noqa: E402
from models.registry import load_registry  # noqa: E402

LEVELS = (1, 8, 32)
LITELLM_VENV = PROJECT_ROOT / ".venv-litellm"
# LiteLLM fetches a model price map from GitHub at import unless told to use its own copy.
LITELLM_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
LITELLM_KEY = "sk-embassy-bench-" + "0" * 24  # the proxy refuses to start without a master key


def litellm_binary(venv: Path) -> Path:
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        print(f"installing litellm[proxy] into {venv} (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    return exe


def run_litellm(exe: Path, vllm_port: int, served_name: str, cached: bool, plan, rounds: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="embassy-bench-litellm-"))
    config = {"model_list": [{"model_name": go.MODEL, "litellm_params": {
        "model": f"hosted_vllm/{served_name}", "api_base": f"http://127.0.0.1:{vllm_port}/v1", "api_key": "none"}}],
        "litellm_settings": {"cache": cached, **({"cache_params": {"type": "local"}} if cached else {}),
                             "telemetry": False}}
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    port = stack.free_port()
    log = open(tmp / "litellm.log", "wb")
    proc = subprocess.Popen([str(exe), "--config", str(tmp / "config.yaml"), "--host", "127.0.0.1",
                             "--port", str(port), "--num_workers", "1"],
                            env={**os.environ, **stack.offline_environment(), **LITELLM_ENV,
                                 "LITELLM_MASTER_KEY": LITELLM_KEY},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        go.wait_http(f"http://127.0.0.1:{port}/health/liveliness", proc, seconds=180)
        return go.measure(f"http://127.0.0.1:{port}/v1/chat/completions",
                          {"Authorization": f"Bearer {LITELLM_KEY}"}, plan, rounds)
    finally:
        stop(proc)


def run_embassy(model_store: Path, plan, rounds: int) -> dict[str, dict]:
    settings, state = go.start_bench_stack(model_store)
    try:
        auth = {"Authorization": f"Bearer {create_key(settings.keys_path, 'bench')}"}
        url = f"{state.url}/v1/chat/completions"
        print("Embassy, no cache ...", flush=True)
        out = {"Embassy": go.measure(url, {**auth, "Cache-Control": "no-cache, no-store"}, plan, rounds)}
        print("Embassy, semantic cache ...", flush=True)
        out["Embassy + cache"] = go.measure(url, auth, plan, rounds)
        return out
    finally:
        stack.stop_stack(settings)


def run_bare_and_litellm(model_dir: Path, engine_args: dict, exe: Path, plan, rounds: int) -> dict[str, dict]:
    port = stack.free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--host", "127.0.0.1", "--port", str(port),
           *go.vllm_cli_flags(engine_args)]
    log = open(Path(tempfile.gettempdir()) / "embassy-bench-vllm.log", "wb")
    proc = subprocess.Popen(cmd, env={**os.environ, **stack.offline_environment()}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        go.wait_http(f"http://127.0.0.1:{port}/health", proc)
        print("bare vLLM ...", flush=True)
        out = {"vLLM": go.measure(f"http://127.0.0.1:{port}/v1/chat/completions", {}, plan, rounds)}
        print("LiteLLM proxy, no cache ...", flush=True)
        out["LiteLLM"] = run_litellm(exe, port, go.MODEL, False, plan, rounds)
        print("LiteLLM proxy, in-memory cache ...", flush=True)
        out["LiteLLM + cache"] = run_litellm(exe, port, go.MODEL, True, plan, rounds)
        return out
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


def report(results: dict[str, dict], rounds: int) -> None:
    bare = results["vLLM"]
    print(f"\nmedians of {rounds} round(s); ratios to bare vLLM at the same concurrency")
    print(f"{'':24}{'TTFT p50 ms':>12}{'x':>7}{'p50 ms':>10}{'x':>7}{'out tok/s':>11}{'x':>7}")
    for c in LEVELS:
        for name, res in results.items():
            r, b = res[c], bare[c]
            print(f"c={c:<3}{name:<20}{r['ttft_p50_ms']:>12.1f}{r['ttft_p50_ms'] / b['ttft_p50_ms']:>7.2f}"
                  f"{r['p50_ms']:>10.1f}{r['p50_ms'] / b['p50_ms']:>7.2f}"
                  f"{r['output_tok_s']:>11.1f}{r['output_tok_s'] / b['output_tok_s']:>7.2f}")
    print(json.dumps({name: {str(c): v for c, v in res.items()} for name, res in results.items()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, nargs=3, default=[16, 48, 64], metavar=("C1", "C8", "C32"))
    parser.add_argument("--rounds", type=int, default=1, help="repetitions of each level; medians are printed")
    parser.add_argument("--litellm", type=Path, default=LITELLM_VENV, help="virtual environment with litellm[proxy]")
    args = parser.parse_args()
    plan = list(zip(LEVELS, args.requests))

    exe = litellm_binary(args.litellm)
    settings = load_settings(PROJECT_ROOT / "cluster_configs" / "local.yaml", environ={})
    manifest = load_registry()[go.MODEL]
    prepared = prepare_model(manifest, settings.resolve(settings.model_store))
    engine_args = VLLMEngine(manifest, prepared.path, default_max_tokens=64).engine_args()
    print(f"engine args: {engine_args}", flush=True)
    results = run_bare_and_litellm(prepared.path, engine_args, exe, plan, args.rounds)
    results.update(run_embassy(settings.resolve(settings.model_store), plan, args.rounds))
    report(results, args.rounds)


if __name__ == "__main__":
    main()
