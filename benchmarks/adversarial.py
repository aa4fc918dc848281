"""Adversarial inputs against a running stack: worst latency, every status code, and what
another tenant sees meanwhile.

Replays the fixed set of benchmarks/adversarial_inputs.py (strings that make backtracking
patterns quadratic, JSON nested past the parser's stack, huge messages and bodies, too many
messages, identifiers hidden by invisible Unicode) to /v1/chat/completions and /v1/guard
as one tenant, while a second tenant sends an ordinary guard check every 0.25 s. Prints
each input's status and latency, the attacker's worst latency, and the neighbour's median
and worst latency before and during the replay (with their ratio).

    .venv/bin/python benchmarks/adversarial.py                 # starts its own stack
    .venv/bin/python benchmarks/adversarial.py --url http://127.0.0.1:8000 \\
        --key $ATTACKER_KEY --neighbour-key $OTHER_KEY         # a stack that runs already

Targets (issue 15): no 5xx, no answer slower than 2 s, the neighbour unaffected. Exit 1
when a 5xx is seen, or a refusal, a guard call or a chat's guard stage takes over 2 s (a
served chat's total also holds the model's prefill of its long prompt, printed beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.adversarial_inputs import HIDDEN_CARD, nested_json, repeated_units  # noqa: E402
from embassy import stack  # noqa: E402
from embassy.settings import PROJECT_ROOT, load_settings  # noqa: E402
from embassy.tenants import create_key  # noqa: E402

MODEL = "smollm2-135m-instruct"
SLOW_S = 2.0
# The units that cost the unbounded patterns most (see tests/unit/guardrail/test_redos.py).
REDOS_UNITS = ["a-", "-a", "'a", "x'", "._", "a.", "1-", "\n\n", ".!", "_ "]


def chat(text: str, **over) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 1, "temperature": 0,
            **over}


def cases(message_chars: int) -> list[tuple[str, str, bytes]]:
    """(name, path, body) of every adversarial request."""
    out: list[tuple[str, str, bytes]] = []
    units = repeated_units(message_chars - 8)
    for unit in REDOS_UNITS:
        out.append((f"redos chat {unit!r} x{message_chars // len(unit)}", "/v1/chat/completions",
                    json.dumps(chat(units[unit])).encode()))
        out.append((f"redos guard {unit!r}", "/v1/guard",
                    json.dumps({"text": units[unit][:19_000]}).encode()))
    out.append(("nested JSON depth 5000", "/v1/chat/completions", nested_json(5000)))
    out.append(("nested JSON depth 5000 (guard)", "/v1/guard", nested_json(5000)))
    out.append(("schema nested 200 deep", "/v1/chat/completions", json.dumps(chat("hi", response_format={
        "type": "json_schema", "json_schema": {"name": "deep", "schema": _deep_schema(200)}})).encode()))
    out.append(("message of 100,000 characters", "/v1/chat/completions", json.dumps(chat("a" * 100_000)).encode()))
    out.append(("body of 2 MB", "/v1/chat/completions", json.dumps(chat("b" * 2_000_000)).encode()))
    out.append(("1,000 messages", "/v1/chat/completions", json.dumps(
        {**chat(""), "messages": [{"role": "user", "content": "hi"}] * 1000}).encode()))
    for i, card in enumerate(HIDDEN_CARD):
        out.append((f"hidden card {i}", "/v1/chat/completions",
                    json.dumps(chat(f"Charge the duty to card {card} please.")).encode()))
    out.append(("tag characters everywhere", "/v1/chat/completions",
                json.dumps(chat("".join(c + "\U000e0041" for c in "What is an HS code?"))).encode()))
    return out


def _deep_schema(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


async def neighbour(client: httpx.AsyncClient, url: str, key: str, stop: asyncio.Event) -> list[float]:
    latencies = []
    while not stop.is_set():
        t = time.perf_counter()
        r = await client.post(f"{url}/v1/guard", json={"text": "Which HS heading covers roasted coffee?"},
                              headers={"Authorization": f"Bearer {key}"})
        latencies.append(time.perf_counter() - t)
        if r.status_code != 200:
            print(f"  neighbour got {r.status_code}: {r.text[:120]}")
        await asyncio.sleep(0.25)
    return latencies


async def run(url: str, key: str, other: str, message_chars: int) -> int:
    async with httpx.AsyncClient(timeout=60) as client:
        stop = asyncio.Event()
        task = asyncio.create_task(neighbour(client, url, other, stop))
        await asyncio.sleep(5)
        stop.set()
        before = await task
        stop = asyncio.Event()
        task = asyncio.create_task(neighbour(client, url, other, stop))
        results = []
        for name, path, body in cases(message_chars):
            t = time.perf_counter()
            r = await client.post(f"{url}{path}", content=body,
                                  headers={"Authorization": f"Bearer {key}", "content-type": "application/json"})
            seconds = time.perf_counter() - t
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            code = (body.get("error") or {}).get("code") if r.status_code != 200 else ""
            # A served chat's time is mostly the model's prefill of a long prompt (seconds on
            # CPU, as for any long prompt); the guard's own stage is what an attacker controls.
            guard_s = body.get("embassy", {}).get("timings_ms", {}).get("guardrail_input", seconds * 1000) / 1000 \
                if r.status_code == 200 and path.endswith("completions") else seconds
            results.append((name, r.status_code, guard_s))
            print(f"  {r.status_code}  {seconds * 1000:7.0f} ms total  {guard_s * 1000:6.0f} ms guard  {name}  "
                  f"{code or ''}", flush=True)
        stop.set()
        during = await task
    worst = max(results, key=lambda x: x[2])
    fives = [r for r in results if r[1] >= 500]
    print(f"attacker: {len(results)} requests, statuses {sorted({r[1] for r in results})}, "
          f"worst guard or refusal time {worst[2] * 1000:.0f} ms ({worst[0]})")
    b, d = statistics.median(before), statistics.median(during)
    print(f"neighbour /v1/guard: median {b * 1000:.0f} ms before, {d * 1000:.0f} ms during "
          f"(ratio {d / b:.2f}); worst during {max(during) * 1000:.0f} ms over {len(during)} requests")
    failed = bool(fives) or worst[2] > SLOW_S or max(during) > SLOW_S
    print("FAIL" if failed else "OK: no 5xx, nothing slower than 2 s")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url")
    parser.add_argument("--key")
    parser.add_argument("--neighbour-key")
    args = parser.parse_args()
    if args.url:
        sys.exit(asyncio.run(run(args.url, args.key, args.neighbour_key, 16_000)))
    tmp = Path(tempfile.mkdtemp(prefix="embassy-adversarial-"))
    base = yaml.safe_load((PROJECT_ROOT / "cluster_configs" / "local.yaml").read_text())
    base.update({"port": stack.free_port(), "state_dir": str(tmp / "state"), "dev_tenant": None,
                 "tenants": {t: {"jurisdiction": "EU", "models": [MODEL]} for t in ("attacker", "neighbour")},
                 "guardrail": {"topics_file": None}})
    path = tmp / "adversarial.yaml"
    path.write_text(yaml.safe_dump(base))
    settings = load_settings(path, environ={})
    print(f"starting a stack on port {settings.port} (a few minutes on CPU)", flush=True)
    state = stack.start_stack(settings, path, progress=lambda m: print(f"  [embassy] {m}", flush=True))
    try:
        code = asyncio.run(run(state.url, create_key(settings.keys_path, "attacker"),
                               create_key(settings.keys_path, "neighbour"), settings.requests.max_message_chars))
    finally:
        stack.stop_stack(settings)
    sys.exit(code)


if __name__ == "__main__":
    main()
