"""What the Embassy graph costs on top of bare vLLM, measured in one run.

Sends the same streaming requests (fixed prompts, max_tokens 64, temperature 0) at
concurrency 1 and 8 to (a) vLLM's own OpenAI server and (b) the Embassy graph, both on
the same model and engine arguments, one after the other on this machine, and prints
p50/p99 latency, time to first token and output tokens/s for each, with ratios.

    .venv/bin/python benchmarks/graph_overhead.py [--requests-c1 16] [--requests-c8 48]

Targets, with the output guard on: time to first token p50 within 30 ms of bare vLLM at
concurrency 1 and within 15 % at concurrency 8; output tokens/s at concurrency 8 >= 0.95 of
bare vLLM's (issue 17); at concurrency 1 at most 15 ms added to p50 latency (issue 2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deployments.llm.core import VLLMEngine  # noqa: E402
from embassy import stack  # noqa: E402
from embassy.settings import PROJECT_ROOT, load_settings  # noqa: E402
from embassy.tenants import create_key  # noqa: E402
from models.prepare import prepare_model  # noqa: E402
from models.registry import load_registry  # noqa: E402

MODEL = "smollm2-135m-instruct"
PROMPTS = [
    "What is a commercial invoice used for in customs clearance?",
    "Explain the difference between FOB and CIF incoterms.",
    "How is an HS code structured?",
    "What is a certificate of origin?",
    "List the documents needed to import goods into the EU.",
    "What does a customs broker do?",
    "What is a bill of lading?",
    "How are import duties calculated?",
]


@dataclass
class Sample:
    latency_s: float
    ttft_s: float
    completion_tokens: int


async def one_request(client: httpx.AsyncClient, url: str, headers: dict, prompt: str) -> Sample:
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": 64,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    ttft = None
    tokens = saved = 0
    async with client.stream("POST", url, json=body, headers=headers) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if ttft is None and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                ttft = time.perf_counter() - t0
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if chunk.get("embassy"):  # an Embassy cache hit reports 0 generated tokens and the answer's as saved
                saved = chunk["embassy"]["cache"]["tokens_saved"]
    # Tokens delivered: what the model generated, or for a cache hit the answer's tokens.
    return Sample(time.perf_counter() - t0, ttft if ttft is not None else float("nan"), tokens or saved)


async def load(url: str, headers: dict, concurrency: int, n: int) -> dict:
    async with httpx.AsyncClient(timeout=600) as client:
        queue = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
        samples: list[Sample] = []

        async def worker():
            while queue:
                samples.append(await one_request(client, url, headers, queue.pop()))

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - t0
    lat = sorted(s.latency_s for s in samples)
    ttft = sorted(s.ttft_s for s in samples)
    return {"p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "ttft_p50_ms": 1000 * statistics.median(ttft),
            "output_tok_s": sum(s.completion_tokens for s in samples) / wall, "n": len(samples)}


async def warm_up(url: str, headers: dict) -> None:
    async with httpx.AsyncClient(timeout=600) as client:
        for p in PROMPTS[:2]:
            await one_request(client, url, headers, p)


def measure(url: str, headers: dict, plan: list[tuple[int, int]], rounds: int) -> dict:
    """Each concurrency level `rounds` times; the median of each figure over the rounds, so
    one stall of this noisy machine does not decide the result."""
    asyncio.run(warm_up(url, headers))
    runs = {c: [] for c, _ in plan}
    for r in range(rounds):
        for c, n in plan:
            runs[c].append(asyncio.run(load(url, headers, c, n)))
            print(f"  round {r + 1}/{rounds} c={c}: {runs[c][-1]['output_tok_s']:.1f} tok/s", flush=True)
    return {c: {key: statistics.median(run[key] for run in rs) for key in rs[0]} | {
        "tok_s_min": min(run["output_tok_s"] for run in rs), "tok_s_max": max(run["output_tok_s"] for run in rs)}
        for c, rs in runs.items()}


def wait_http(url: str, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}; see its log")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} did not come up")


def vllm_cli_flags(engine_args: dict) -> list[str]:
    flags = []
    for key, value in engine_args.items():
        if key == "model":
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append("--no-" + key.replace("_", "-"))
        else:
            flags += [flag, str(value)]
    return flags


def run_bare_vllm(model_dir: Path, engine_args: dict, plan: list[tuple[int, int]], rounds: int) -> dict:
    port = stack.free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--host", "127.0.0.1", "--port", str(port),
           *vllm_cli_flags(engine_args)]
    env = {**os.environ, **stack.offline_environment()}
    log = open(Path(tempfile.gettempdir()) / "embassy-bench-vllm.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        return measure(url, {}, plan, rounds)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def start_bench_stack(model_store: Path, **extra):
    """local.yaml on a free port and a fresh state folder, one tenant "bench"; `extra` is
    merged on top. Returns (settings, the running stack's state)."""
    tmp = Path(tempfile.mkdtemp(prefix="embassy-bench-"))
    base = yaml.safe_load((PROJECT_ROOT / "cluster_configs" / "local.yaml").read_text())
    base.update({"port": stack.free_port(), "state_dir": str(tmp / "state"), "model_store": str(model_store),
                 "dev_tenant": None, "tenants": {"bench": {"jurisdiction": "EU", "models": [MODEL]}}, **extra})
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(base))
    settings = load_settings(path, environ={})
    return settings, stack.start_stack(settings, path, progress=lambda m: print(f"  [embassy] {m}", flush=True))


def run_embassy(model_store: Path, plan: list[tuple[int, int]], rounds: int, overrides: dict,
                stream_batching_ms: float | None) -> dict:
    requests = yaml.safe_load((PROJECT_ROOT / "cluster_configs" / "local.yaml").read_text()).get("requests", {})
    if stream_batching_ms is not None:
        requests = {**requests, "stream_batching_interval_ms": stream_batching_ms}
    settings, state = start_bench_stack(model_store, engine_overrides={MODEL: overrides} if overrides else {},
                                        requests=requests)
    try:
        # The same prompts repeat: without this they would be answered from the semantic
        # cache, and this script measures the graph's cost on the model path.
        headers = {"Authorization": f"Bearer {create_key(settings.keys_path, 'bench')}",
                   "Cache-Control": "no-cache, no-store"}
        url = f"{state.url}/v1/chat/completions"
        return measure(url, headers, plan, rounds)
    finally:
        stack.stop_stack(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests-c1", type=int, default=16)
    parser.add_argument("--requests-c8", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of each level; medians are printed")
    parser.add_argument("--stream-interval", type=int, default=None,
                        help="vLLM stream_interval for both sides (default: the manifest's)")
    parser.add_argument("--stream-batching-ms", type=float, default=None,
                        help="Embassy's requests.stream_batching_interval_ms (default: local.yaml's)")
    args = parser.parse_args()
    overrides = {"stream_interval": args.stream_interval} if args.stream_interval else {}
    plan = [(1, args.requests_c1), (8, args.requests_c8)]

    settings = load_settings(PROJECT_ROOT / "cluster_configs" / "local.yaml", environ={})
    manifest = load_registry()[MODEL]
    prepared = prepare_model(manifest, settings.resolve(settings.model_store))
    engine_args = VLLMEngine(manifest, prepared.path, default_max_tokens=64, overrides=overrides).engine_args()
    print(f"engine args: {engine_args}", flush=True)

    print("bare vLLM OpenAI server ...", flush=True)
    bare = run_bare_vllm(prepared.path, engine_args, plan, args.rounds)
    print("Embassy graph ...", flush=True)
    graph = run_embassy(settings.resolve(settings.model_store), plan, args.rounds, overrides,
                        args.stream_batching_ms)

    print(f"\nmedians of {args.rounds} rounds (tok/s: min-max over the rounds)")
    print(f"{'':22}{'p50 ms':>10}{'p99 ms':>10}{'TTFT p50':>10}{'out tok/s':>11}{'n':>5}  tok/s range")
    for c, _ in plan:
        for name, res in (("vLLM", bare[c]), ("Embassy", graph[c])):
            r = res
            print(f"c={c} {name:<17}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}{r['ttft_p50_ms']:>10.1f}"
                  f"{r['output_tok_s']:>11.1f}{r['n']:>5.0f}  {r['tok_s_min']:.1f}-{r['tok_s_max']:.1f}")
        print(f"c={c} Embassy/vLLM      p50 x{graph[c]['p50_ms'] / bare[c]['p50_ms']:.3f} "
              f"(+{graph[c]['p50_ms'] - bare[c]['p50_ms']:.1f} ms), TTFT +"
              f"{graph[c]['ttft_p50_ms'] - bare[c]['ttft_p50_ms']:.1f} ms, tok/s x"
              f"{graph[c]['output_tok_s'] / bare[c]['output_tok_s']:.3f}")
    c1_added = graph[1]["p50_ms"] - bare[1]["p50_ms"]
    c1_ttft = graph[1]["ttft_p50_ms"] - bare[1]["ttft_p50_ms"]
    c8_ttft = graph[8]["ttft_p50_ms"] / bare[8]["ttft_p50_ms"]
    c8_ratio = graph[8]["output_tok_s"] / bare[8]["output_tok_s"]

    def verdict(ok: bool) -> str:
        return "MET" if ok else "NOT MET"
    print(f"\ntarget c=1 TTFT p50 added <= 30 ms: {c1_ttft:.1f} ms {verdict(c1_ttft <= 30)}")
    print(f"target c=8 TTFT p50 ratio <= 1.15: {c8_ttft:.3f} {verdict(c8_ttft <= 1.15)}")
    print(f"target c=8 tok/s ratio >= 0.95: {c8_ratio:.3f} {verdict(c8_ratio >= 0.95)}")
    print(f"target c=1 added p50 <= 15 ms: {c1_added:.1f} ms {verdict(c1_added <= 15)}")
    print(json.dumps({"bare_vllm": bare, "embassy": graph}))


if __name__ == "__main__":
    main()
