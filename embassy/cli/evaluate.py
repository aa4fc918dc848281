"""`embassy eval`: measure the guard, the cache and the groundedness check on labelled data."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from embassy.cli.common import ConfigOpt, _progress_bar, _settings, err

eval_app = typer.Typer(help="Measure parts of the graph on labelled data.", no_args_is_help=True)


@eval_app.command("guard")
def eval_guard(
        task: str = typer.Option(..., "--task", help="pii | injection | topic"),
        data: Path = typer.Option(..., "--data", exists=True, dir_okay=False, help="JSON Lines file."),
        topics: Path = typer.Option(None, "--topics", exists=True, dir_okay=False,
                                    help="YAML of allowed/denied topics (task topic); default: the config's."),
        config: Path = ConfigOpt,
        as_json: bool = typer.Option(False, "--json")) -> None:
    """Measure the guard on labelled data; prints one JSON object."""
    import yaml

    from deployments.guardrail.core import EmbassyGuardrail
    from deployments.guardrail.evaluation import eval_binary, eval_pii, read_jsonl
    from deployments.guardrail.normalize import normalize

    if task not in ("pii", "injection", "topic"):
        err.print(f"[red]--task: {task!r} is not one of pii, injection, topic[/red]")
        raise typer.Exit(2)
    settings = _settings(config)
    if topics is not None:
        raw = settings.model_dump(mode="json")
        raw["guardrail"]["topics"] = yaml.safe_load(topics.read_text())
        settings = type(settings).model_validate(raw)
    try:
        rows = read_jsonl(data)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    guard = EmbassyGuardrail(settings)
    if task == "pii":
        result = eval_pii(rows, guard.detector.find_as_written)
    elif task == "injection":
        def flagged(text: str) -> bool:
            text = normalize(text)
            threshold = settings.guardrail.injection_threshold or guard.injection.model.threshold
            return guard.injection_score(text) > threshold
        result = eval_binary(rows, flagged, positive="injection")
    else:
        def refused(text: str) -> bool:
            return guard.topic.validate(text, {"embedding": guard.embed_one(normalize(text))}).outcome == "fail"
        r = eval_binary(rows, refused, positive="out_of_scope")
        result = {"n": r["n"], "accept_in_scope": round(1 - r["fpr"], 4) if r["fpr"] is not None else None,
                  "reject_out_of_scope": r["tpr"], "latency_ms": r["latency_ms"]}
    print(json.dumps(result) if as_json else json.dumps(result, indent=2))


@eval_app.command("cache")
def eval_cache_cmd(
        pairs: Path = typer.Option(..., "--pairs", exists=True, dir_okay=False,
                                   help="JSON Lines of {text_a, text_b, label} (.gz too): "
                                        "models/training/qqp_pairs_dev.jsonl.gz with --part test."),
        part: str = typer.Option(None, "--part", help="Only this part of the file's split (train, calibrate, "
                                                     "test: the verifier's held-out pairs)."),
        limit: int = typer.Option(None, "--limit", help="Only the first N pairs."),
        shared: bool = typer.Option(False, "--shared-scope",
                                    help="All pairs in one scope (lookups may hit other pairs' questions)."),
        config: Path = ConfigOpt,
        as_json: bool = typer.Option(False, "--json")) -> None:
    """Store each text_a, look up each text_b through the real cache path (a Redis on a
    free loopback port unless cache.redis_url is set); prints one JSON object."""
    import asyncio
    import tempfile

    from deployments.cache.deployment import build_cache
    from deployments.cache.evaluation import eval_cache, eval_settings
    from deployments.guardrail.evaluation import read_jsonl
    from embassy.redis_server import start_redis

    from deployments.cache.verifier import pair_split

    settings = _settings(config)
    if part not in (None, "train", "calibrate", "test"):
        err.print(f"[red]--part: {part!r} is not one of train, calibrate, test[/red]")
        raise typer.Exit(2)
    try:
        rows = [r for i, r in enumerate(read_jsonl(pairs)) if part is None or pair_split(i) == part]
        rows = rows[:limit] if limit else rows
        bad = next((i for i, r in enumerate(rows, 1) if not {"text_a", "text_b", "label"} <= set(r)), None)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    if bad is not None:
        err.print(f"[red]{pairs}: row {bad}: needs text_a, text_b and label[/red]")
        raise typer.Exit(2)
    local = None if settings.cache.redis_url else start_redis(Path(tempfile.mkdtemp(prefix="embassy-eval-")),
                                                               maxmemory_mb=1024)
    cache_settings = eval_settings(settings, settings.cache.redis_url or local.url)
    settings = settings.model_copy(update={"cache": cache_settings})

    async def run() -> dict:
        cache = build_cache(settings)
        try:
            with _progress_bar() as bar:
                tasks = {}

                def step(phase: str, done: int, total: int) -> None:
                    if phase not in tasks:
                        tasks[phase] = bar.add_task(phase, total=total)
                    bar.update(tasks[phase], completed=done)
                return await eval_cache(rows, cache, settings.models[0], shared, progress=step)
        finally:
            await cache.index.delete(drop=True)
            await cache.close()
    try:
        result = asyncio.run(run())
    finally:
        if local:
            local.stop()
    print(json.dumps(result) if as_json else json.dumps(result, indent=2))


@eval_app.command("groundedness")
def eval_groundedness(data: Path = typer.Option(..., "--data", exists=True, dir_okay=False,
                                                help="JSON Lines of {context: [passages], answer, label (1 supported)}."),
                      config: Path = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """Score every answer against its context with the guard's groundedness check; print
    {"n", "auroc", "latency_ms": {"p50", "p99"}, "flagged": {...}} (one JSON object)."""
    import time

    from sklearn.metrics import roc_auc_score

    from deployments.guardrail.evaluation import latency_summary, read_jsonl
    from deployments.guardrail.groundedness import GroundednessScorer
    from embassy.embeddings import shared_embedder

    settings = _settings(config)
    try:
        rows = read_jsonl(data)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    bad = next((i for i, r in enumerate(rows, 1) if not {"context", "answer", "label"} <= set(r)
                or not isinstance(r["context"], list)), None)
    if bad is not None or not rows:
        err.print(f"[red]{data}: row {bad or 1}: needs context (a list), answer and label[/red]")
        raise typer.Exit(2)
    scorer = GroundednessScorer(shared_embedder().embed)
    scorer.score("warm up.", ["warm up."])
    scores, latencies = [], []
    for r in rows:
        t0 = time.perf_counter()
        scores.append(scorer.score(r["answer"], r["context"]).score)
        latencies.append(time.perf_counter() - t0)
    labels = [int(r["label"]) for r in rows]
    threshold = settings.guardrail.groundedness_threshold
    flagged = [s < threshold for s in scores]
    result = {"n": len(rows), "auroc": round(float(roc_auc_score(labels, scores)), 4),
              "latency_ms": latency_summary(latencies),
              "flagged": {"threshold": threshold,
                          "supported": round(sum(f for f, y in zip(flagged, labels) if y) / max(1, sum(labels)), 4),
                          "unsupported": round(sum(f for f, y in zip(flagged, labels) if not y)
                                               / max(1, len(labels) - sum(labels)), 4)}}
    print(json.dumps(result) if as_json else json.dumps(result, indent=2))
