"""Requests failed, p99 latency and time to first token during a model swap and a rollback,
against the same load without one, in one run (issue 18).

Starts a stack on the default model with the test registry (tests/data/manifests: version
`1b` is version 1's weights with other engine arguments), runs `--streams` concurrent
streaming clients for `--baseline-s` seconds, then during `embassy models deploy
smollm2-135m-instruct@1b` (a full swap), then during `embassy models rollback`. A request
fails when its status is not 200, its stream lacks `[DONE]`, carries an in-band error, or
ends with another finish_reason than stop or length.

    .venv/bin/python benchmarks/swap.py [--streams 8] [--baseline-s 60]

On this 2-core host 32 streams beside two engines leave each one so little CPU that time
to first token passes the client deadline with or without a swap; 8 is the default here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import graph_overhead as go  # noqa: E402
from embassy import stack  # noqa: E402
from embassy.settings import PROJECT_ROOT, load_settings  # noqa: E402
from embassy.tenants import create_key  # noqa: E402
from models.prepare import prepare_model  # noqa: E402
from models.registry import load_registry  # noqa: E402


async def one(client: httpx.AsyncClient, url: str, headers: dict, n: int) -> dict:
    body = {"model": go.MODEL, "max_tokens": 32, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": f"{go.PROMPTS[n % len(go.PROMPTS)]} ({n})"}]}
    t0, ttft, finish, done, error = time.perf_counter(), None, None, False, None
    try:
        async with client.stream("POST", url, json=body, headers=headers, timeout=120) as r:
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    error = chunk["error"].get("code")
                for c in chunk.get("choices", []):
                    if ttft is None and c["delta"].get("content"):
                        ttft = time.perf_counter() - t0
                    finish = c.get("finish_reason") or finish
            status, version = r.status_code, r.headers.get("x-embassy-model-version")
    except httpx.HTTPError as exc:
        status, version, error = 0, None, type(exc).__name__
    ok = status == 200 and done and error is None and finish in ("stop", "length")
    return {"ok": ok, "status": status, "latency_s": time.perf_counter() - t0, "ttft_s": ttft, "version": version}


async def load(url: str, headers: dict, streams: int, until) -> list[dict]:
    results: list[dict] = []
    async with httpx.AsyncClient() as client:
        async def worker(i: int) -> None:
            n = i * 10_000
            while not until():
                results.append(await one(client, url, headers, n))
                n += 1
        await asyncio.gather(*(worker(i) for i in range(streams)))
    return results


def during(url: str, headers: dict, streams: int, command: list[str] | None, seconds: float) -> tuple[list, float]:
    """The load while `command` runs (or for `seconds`), and how long that took."""
    async def run() -> tuple[list, float]:
        t0 = time.monotonic()
        if command is None:
            return await load(url, headers, streams, lambda: time.monotonic() - t0 > seconds), seconds
        proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        results_task = asyncio.ensure_future(load(url, headers, streams, lambda: proc.returncode is not None))
        out, err = await proc.communicate()
        took = time.monotonic() - t0
        if proc.returncode != 0:
            print(err.decode()[-2000:], file=sys.stderr)
            raise SystemExit(f"{' '.join(command[3:5])} failed")
        return await results_task, took
    return asyncio.run(run())


def summary(name: str, results: list[dict], took: float, base: dict | None) -> dict:
    ok = [r for r in results if r["ok"]]
    lat = sorted(r["latency_s"] for r in ok)
    ttft = sorted(r["ttft_s"] for r in ok if r["ttft_s"] is not None)
    row = {"phase": name, "seconds": round(took, 1), "requests": len(results), "failed": len(results) - len(ok),
           "failed_by_status": {str(s): sum(1 for r in results if not r["ok"] and r["status"] == s)
                                for s in sorted({r["status"] for r in results if not r["ok"]})},
           "versions": sorted({r["version"] for r in results if r["version"]}),
           "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))] if lat else None,
           "ttft_p50_ms": 1000 * statistics.median(ttft) if ttft else None,
           "ttft_p99_ms": 1000 * ttft[int(0.99 * (len(ttft) - 1))] if ttft else None}
    ratios = ""
    if base and lat and base["p99_ms"]:
        ratios = f"  p99 x{row['p99_ms'] / base['p99_ms']:.2f}  TTFT p50 x{row['ttft_p50_ms'] / base['ttft_p50_ms']:.2f}"
    print(f"{name:<10} {row['seconds']:>6.1f}s {row['requests']:>5} req {row['failed']:>3} failed  "
          f"p99 {row['p99_ms'] or 0:7.0f} ms  TTFT p50 {row['ttft_p50_ms'] or 0:6.0f} ms p99 "
          f"{row['ttft_p99_ms'] or 0:6.0f} ms  versions {row['versions']}{ratios}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--baseline-s", type=float, default=60)
    args = parser.parse_args()
    local = load_settings(PROJECT_ROOT / "cluster_configs" / "local.yaml", environ={})
    prepared = prepare_model(load_registry()[go.MODEL], local.resolve(local.model_store))
    settings, state = go.start_bench_stack(prepared.path.parent, rollout={
        "registry": ["models/manifests", "tests/data/manifests"]})
    config = Path(settings.state_dir).parent / "bench.yaml"
    cli = [sys.executable, "-m", "embassy.cli", "models"]
    try:
        headers = {"Authorization": f"Bearer {create_key(settings.keys_path, 'bench')}",
                   "Cache-Control": "no-store"}
        url = f"{state.url}/v1/chat/completions"
        base = summary("baseline", *during(url, headers, args.streams, None, args.baseline_s), None)
        rows = [base,
                summary("swap", *during(url, headers, args.streams,
                                        [*cli, "deploy", f"{go.MODEL}@1b", "--config", str(config)], 0), base),
                summary("rollback", *during(url, headers, args.streams,
                                            [*cli, "rollback", go.MODEL, "--config", str(config)], 0), base)]
        print(json.dumps(rows))
    finally:
        stack.stop_stack(settings)


if __name__ == "__main__":
    main()
