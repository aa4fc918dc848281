"""The `embassy` command. Heavy modules are imported inside commands so `--help` is instant."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from embassy.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "cluster_configs" / "local.yaml"
DEFAULT_TOPOLOGY = Path(__file__).resolve().parent.parent / "cluster_configs" / "regions.yaml"

app = typer.Typer(help="Embassy: regional LLM serving over an OpenAI-compatible API.",
                  no_args_is_help=True, add_completion=False)
models_app = typer.Typer(help="The model registry and the local model store.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (stored only as hashes).", no_args_is_help=True)
app.add_typer(models_app, name="models")
train_app = typer.Typer(help="Rebuild the shipped artefacts (models/artifacts) from models/training.",
                        no_args_is_help=True)
eval_app = typer.Typer(help="Measure parts of the graph on labelled data.", no_args_is_help=True)
cache_app = typer.Typer(help="The semantic cache: its verifier and its entries.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(train_app, name="train")
app.add_typer(cache_app, name="cache")
app.add_typer(eval_app, name="eval")
config_app = typer.Typer(help="The multi-region topology and the files rendered from it.",
                         no_args_is_help=True)
app.add_typer(config_app, name="config")
dns_app = typer.Typer(help="The geo-DNS front.", no_args_is_help=True)
app.add_typer(dns_app, name="dns")
audit_app = typer.Typer(help="The region's tamper-evident audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
corpus_app = typer.Typer(help="The region's documents for retrieval (RAG).", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")
console = Console()
err = Console(stderr=True)

ConfigOpt = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="Region settings YAML.")
RegionOpt = typer.Option(None, "--region", "-r", help="Region to run; must match the config's region.")


def _settings(config: Path, region: str | None = None):
    from embassy.settings import load_settings

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    if region is not None and region != settings.region:
        err.print(f"[red]{config}: region: is {settings.region!r}, not {region!r}[/red]")
        raise typer.Exit(2)
    return settings


TopologyOpt = typer.Option(DEFAULT_TOPOLOGY, "--topology", help="The multi-region topology YAML.")


def _topology(path: Path):
    from embassy.topology import load_topology

    try:
        return load_topology(path)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)


def _audit_admin(settings, action: str, fields: dict) -> int | None:
    """Record an admin action taken from the command line in the region's audit trail."""
    import socket

    from embassy.audit import writer_for

    writer = writer_for(settings, f"cli-{socket.gethostname()}")
    if writer is not None:
        return writer.write_sync("admin", action, fields={"by": "cli", **fields})
    return None


def _prepare_models(settings) -> None:
    from models.prepare import PreparationError, prepare_model
    from models.registry import load_registry

    registry = load_registry()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        for model_id in settings.models:
            task = bar.add_task(f"{model_id}: verifying", total=1.0)

            def step(desc: str, frac: float, task=task, model_id=model_id) -> None:
                bar.update(task, description=f"{model_id}: {desc}", completed=frac)

            try:
                result = prepare_model(registry[model_id], settings.resolve(settings.model_store), step)
            except PreparationError as exc:
                err.print(f"[red]{exc}[/red]")
                raise typer.Exit(1)
            bar.update(task, description=f"{model_id}: {'prepared' if result.rebuilt else 'up to date'}"
                       f" at {result.path}", completed=1.0)


@app.command()
def serve(region: str = RegionOpt, config: Path = ConfigOpt,
          foreground: bool = typer.Option(False, help="Stay attached; Ctrl-C stops the stack.")) -> None:
    """Start a local Ray cluster and the region's app; wait until ready and print the URL."""
    from embassy import stack
    from embassy.preflight import PreflightError, check_all
    from embassy.tenants import create_key, tenant_has_key

    settings = _settings(config, region)
    if settings.topology is not None:  # never start a region on a topology that does not hold
        _topology(settings.resolve(settings.topology))
    existing = stack.read_state(settings)
    if existing and stack.process_alive(existing.pid):
        err.print(f"error: a stack already runs at {existing.url} (pid {existing.pid}): stop it with "
                  f"`embassy stop --config {config}` first")
        raise typer.Exit(2)
    try:
        check_all(settings, config)
    except PreflightError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    _prepare_models(settings)
    with console.status("starting") as status:
        try:
            state = stack.start_stack(settings, config, progress=lambda msg: status.update(msg))
        except RuntimeError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(1)
    console.print(f"[green]Embassy region {settings.region} is ready at {state.url}[/green]")
    if settings.dev_tenant and settings.dev_tenant in settings.tenants and \
            not tenant_has_key(settings.keys_path, settings.dev_tenant):
        key = create_key(settings.keys_path, settings.dev_tenant)
        console.print(f"Created a development key for tenant '{settings.dev_tenant}' (shown once):\n  {key}")
        console.print(f"Try it:\n  curl {state.url}/v1/chat/completions -H 'Authorization: Bearer {key}' "
                      f"-H 'Content-Type: application/json' -d '{{\"model\": \"{settings.models[0]}\", "
                      "\"messages\": [{\"role\": \"user\", \"content\": \"What is an HS code?\"}]}'")
    else:
        console.print("Use a key from `embassy keys create --tenant <tenant>`.")
    if not foreground:
        console.print("Stop it with `embassy stop`.")
        return
    try:
        import time

        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stack.stop_stack(settings)
        console.print("stopped")


@app.command()
def status(config: Path = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show whether the stack runs and which graph nodes are ready."""
    from embassy import stack

    settings = _settings(config)
    state = stack.read_state(settings)
    if state is None:
        console.print("not running")
        raise typer.Exit(1)
    try:
        code, body = stack.http_get(f"{state.url}/readyz")
        nodes = json.loads(body).get("nodes", {})
    except (OSError, ValueError):
        code, nodes = 0, {}
    report = {"region": state.region, "url": state.url, "ready": code == 200, "nodes": nodes}
    if as_json:
        print(json.dumps(report))
    else:
        console.print(f"region {state.region} at {state.url}: {'ready' if code == 200 else 'NOT ready'}")
        for node, ok in nodes.items():
            console.print(f"  {node}: {'ready' if ok else 'not ready'}")
    raise typer.Exit(0 if code == 200 else 1)


@app.command()
def apply(config: Path = ConfigOpt) -> None:
    """Apply a changed region file to the running stack. Guardrail policies and thresholds
    (and the topics file's content) change in place, without restarting any replica. Edit
    the file the stack was started with: Serve treats another path as new code and rolls
    every replica."""
    from embassy import stack

    settings = _settings(config)
    try:
        state = stack.apply_config(settings, config)
    except RuntimeError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    import hashlib

    _audit_admin(settings, "config.apply", {"config": str(config),
                                            "sha256": hashlib.sha256(Path(config).read_bytes()).hexdigest()})
    console.print(f"applied {config} to {state.url}")


@app.command()
def stop(config: Path = ConfigOpt) -> None:
    """Stop the stack started by `embassy serve` with this config."""
    from embassy import stack

    settings = _settings(config)
    if stack.stop_stack(settings):
        console.print("stopped")
    else:
        console.print("not running")


@models_app.command("list")
def models_list(config: Path = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """List registry manifests and whether each is prepared in the local store."""
    from rich.table import Table

    from models.prepare import verify_store
    from models.registry import load_registry

    settings = _settings(config)
    rows = [{"id": m.id, "version": m.version, "context_length": m.context_length, "sha256": m.sha256,
             "served": m.id in settings.models,
             "prepared": verify_store(settings.resolve(settings.model_store) / m.store_name, m)}
            for m in load_registry().values()]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("id", "version", "context", "sha256", "served here", "prepared")
    for r in rows:
        table.add_row(r["id"], r["version"], str(r["context_length"]), r["sha256"][:12],
                      "yes" if r["served"] else "no", "yes" if r["prepared"] else "no")
    console.print(table)


@models_app.command("prepare")
def models_prepare(config: Path = ConfigOpt) -> None:
    """Convert and verify every model this region serves (skipped when checksums match)."""
    _prepare_models(_settings(config))


@keys_app.command("create")
def keys_create(tenant: str = typer.Option(None, "--tenant", "-t"),
                admin: bool = typer.Option(False, "--admin", help="An operator key: admin endpoints, no chat."),
                config: Path = ConfigOpt) -> None:
    """Create an API key for a configured tenant (or an operator key) and print it once;
    only its hash is stored."""
    from embassy.tenants import create_key

    settings = _settings(config)
    if admin == (tenant is not None):
        err.print("[red]give either --tenant or --admin[/red]")
        raise typer.Exit(2)
    if admin:
        print(create_key(settings.keys_path, None, admin=True))
        return
    if tenant not in settings.tenants:
        err.print(f"[red]{config}: tenants: no tenant {tenant!r} (known: {sorted(settings.tenants)})[/red]")
        raise typer.Exit(2)
    print(create_key(settings.keys_path, tenant))


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


def _progress_bar():
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), console=err)


def _compare_figures(name: str, before: dict | None, after: dict) -> None:
    """Print the new figures beside the manifest's old ones (a retrain should reproduce them)."""
    from models.artifacts import entry

    new = entry(name)
    same = before is not None and before["files"] == new["files"]
    console.print(f"[bold]{name}[/bold]: files {'identical to' if same else 'differ from'} the previous manifest")
    old_figures = (before or {}).get("figures", {})
    for key, value in after.items():
        console.print(f"  {key}: {json.dumps(value)}  (before: {json.dumps(old_figures.get(key))})")


def _previous_entry(name: str, root: Path):
    from models.artifacts import ArtifactError, entry

    try:
        return entry(name, root)
    except ArtifactError:
        return None


OutOpt = typer.Option(None, "--out", help="Artefacts folder to write (default: models/artifacts).")


@train_app.callback()
def _train_quietly() -> None:
    """Offline, and without the libraries' per-file progress bars and advice (transformers'
    weight loading, ONNX Runtime's quantizer): the commands print their own progress."""
    import logging
    import os

    for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
                       "HF_HUB_DISABLE_PROGRESS_BARS": "1"}.items():
        os.environ.setdefault(key, value)
    logging.getLogger().setLevel(logging.ERROR)


@train_app.command("embedder")
def train_embedder(out: Path = OutOpt) -> None:
    """Export all-MiniLM-L6-v2 from its PyPI package to int8 ONNX (no training: a quantization)."""
    import tempfile

    import numpy as np

    from deployments.guardrail.evaluation import read_jsonl
    from embassy.embeddings import ARTIFACT, ONNX_NAME, Embedder, export_onnx, model_path
    from models.artifacts import ARTIFACTS_DIR, QQP_PAIRS, hash_files, record

    root = out or ARTIFACTS_DIR
    before = _previous_entry(ARTIFACT, root)
    with tempfile.TemporaryDirectory() as tmp, err.status("exporting and quantizing the embedder"):
        float_file = Path(tmp) / "float.onnx"
        export_onnx(root / ONNX_NAME, float_file)
        texts = [r["text_a"] for r in read_jsonl(QQP_PAIRS)[:500]]
        cos = (Embedder(root / ONNX_NAME).embed(texts) * Embedder(float_file).embed(texts)).sum(1)
    figures = {"cosine_to_float32": {"median": round(float(np.median(cos)), 4), "min": round(float(cos.min()), 4),
                                     "texts": len(texts)}}
    record(ARTIFACT, [ONNX_NAME], {"base_model": hash_files([model_path() / "model.safetensors"]),
                                  "code": hash_files([Path(__file__).with_name("embeddings.py")])}, figures, root)
    _compare_figures(ARTIFACT, before, figures) if root == ARTIFACTS_DIR else None


@train_app.command("injection")
def train_injection(
        data: list[Path] = typer.Option(None, "--data", exists=True, dir_okay=False,
                                        help="JSON Lines of {text, label: injection|benign}; repeat for several "
                                             "(default: models/training/deepset_train.jsonl, "
                                             "models/guard/injection_extra.jsonl and "
                                             "tests/data/customs_dev/injection_train.jsonl)."),
        target_fpr: float = typer.Option(0.05, "--target-fpr"),
        epochs: int = typer.Option(3, "--epochs"),
        calibrate_on: str = typer.Option("deepset_train.jsonl", "--calibrate-on",
                                         help="File name whose benign rows set the threshold ('' for all)."),
        out: Path = OutOpt) -> None:
    """Fine-tune the prompt-injection classifier; write it, its threshold and its manifest entry."""
    from deployments.guardrail.evaluation import eval_binary, read_jsonl
    from deployments.guardrail.injection import ARTIFACT
    from deployments.guardrail.injection_training import train
    from deployments.guardrail.normalize import normalize
    from embassy.embeddings import shared_embedder
    from models.artifacts import ARTIFACTS_DIR, INJECTION_TEST, INJECTION_TRAIN, hash_files, record
    from models.prepare import sha256_file

    root = out or ARTIFACTS_DIR
    data = data or INJECTION_TRAIN
    before = _previous_entry(ARTIFACT, root)
    rows = [{**row, "source": path.name} for path in data for row in read_jsonl(path)]
    sources = {path.name: sha256_file(path) for path in data}
    embedder = shared_embedder()
    with err.status(f"training the injection classifier on {len(rows)} rows (about 4 minutes on 2 cores)"):
        model = train(rows, embedder.encode, sources, target_fpr, epochs, out=root, calibrate_on=calibrate_on or None)

    def flagged(text: str) -> bool:  # as the guard scores it: on the normalized text
        text = normalize(text)
        _, trunks = embedder.encode([text])
        return model.score(text, trunks[0]) > model.threshold
    test = eval_binary(read_jsonl(INJECTION_TEST), flagged, positive="injection")
    figures = {**entry_figures(ARTIFACT, root), "deepset_test": {k: test[k] for k in ("n", "tpr", "fpr")}}
    made = _previous_entry(ARTIFACT, root)["made_from"]
    made["evaluated_on"] = hash_files([INJECTION_TEST])
    record(ARTIFACT, list(_previous_entry(ARTIFACT, root)["files"]), made, figures, root)
    _compare_figures(ARTIFACT, before, figures) if root == ARTIFACTS_DIR else None


def entry_figures(name: str, root: Path) -> dict:
    from models.artifacts import entry

    return dict(entry(name, root)["figures"])


@train_app.command("cache-verifier")
def train_cache_verifier(
        pairs: Path = typer.Option(None, "--pairs", exists=True, dir_okay=False,
                                   help="JSON Lines of {text_a, text_b, label} (default: "
                                        "models/training/qqp_pairs_dev.jsonl.gz)."),
        max_train: int = typer.Option(None, "--max-train", help="Train on at most this many pairs."),
        epochs: int = typer.Option(3, "--epochs"),
        target_precision: float = typer.Option(0.95, "--target-precision"),
        calibrate_only: bool = typer.Option(False, "--calibrate-only",
                                            help="Keep the trained verifier; pick its threshold again "
                                                 "(after the embedder, the rules or the cosine gate changed)."),
        out: Path = OutOpt, config: Path = ConfigOpt) -> None:
    """Fine-tune the cache's pair verifier (about 30 minutes on 2 cores), export it as int8 ONNX,
    calibrate its threshold and measure it on the held-out part."""
    from deployments.cache.training import calibrate_verifier, train_verifier
    from deployments.cache.verifier import ARTIFACT
    from embassy.embeddings import shared_embedder
    from models.artifacts import ARTIFACTS_DIR, QQP_PAIRS

    settings = _settings(config)
    root = out or ARTIFACTS_DIR
    pairs = pairs or QQP_PAIRS
    before = _previous_entry(ARTIFACT, root)
    embed = shared_embedder().embed
    if calibrate_only:
        with err.status("calibrating the cache verifier"):
            meta = calibrate_verifier(pairs, root, embed, min_cosine=settings.cache.min_cosine,
                                      target_precision=target_precision)
    else:
        with _progress_bar() as bar:
            task = bar.add_task("training the cache verifier", total=None)
            meta = train_verifier(pairs, root, embed, min_cosine=settings.cache.min_cosine,
                                  target_precision=target_precision, max_train=max_train, epochs=epochs,
                                  progress=lambda phase, done, total: bar.update(task, completed=done, total=total))
    figures = {k: meta[k] for k in ("threshold", "calibration", "held_out")}
    _compare_figures(ARTIFACT, before, figures) if root == ARTIFACTS_DIR else None


@train_app.command("all")
def train_all(config: Path = ConfigOpt) -> None:
    """Every artefact, in dependency order: embedder, injection classifier, cache verifier."""
    train_embedder(out=None)
    train_injection(data=None, target_fpr=0.05, epochs=3, calibrate_on="deepset_train.jsonl", out=None)
    train_cache_verifier(pairs=None, max_train=None, epochs=3, target_precision=0.95, calibrate_only=False,
                         out=None, config=config)


def _cache_redis_url(settings) -> str | None:
    """The configured Redis, else the one the local stack started."""
    from embassy.stack import read_state

    if settings.cache.redis_url:
        return settings.cache.redis_url
    state = read_state(settings)
    return state.redis_url if state else None


@cache_app.command("invalidate")
def cache_invalidate(
        tenant: str = typer.Option(None, "--tenant"), model: str = typer.Option(None, "--model"),
        model_version: str = typer.Option(None, "--model-version"),
        corpus_version: str = typer.Option(None, "--corpus-version"),
        region: str = typer.Option(None, "--region", help="Every entry of the region (its Redis is the region's)."),
        config: Path = ConfigOpt) -> None:
    """Remove the region's cache entries that match every option given."""
    import asyncio

    from deployments.cache.deployment import build_cache

    settings = _settings(config)
    match = {k: v for k, v in {"tenant": tenant, "model": model, "model_version": model_version,
                                "corpus_version": corpus_version, "region": region}.items() if v}
    if not match:
        err.print("[red]name at least one of --tenant --model --model-version --corpus-version --region[/red]")
        raise typer.Exit(2)
    if region and region != settings.region:
        err.print(f"[red]{config}: region: is {settings.region!r}, not {region!r}[/red]")
        raise typer.Exit(2)
    url = _cache_redis_url(settings)
    if not url:
        err.print("[red]no Redis: set cache.redis_url or start the stack with `embassy serve`[/red]")
        raise typer.Exit(1)
    settings = settings.model_copy(update={"cache": settings.cache.model_copy(update={"redis_url": url})})

    async def run() -> int:
        cache = build_cache(settings)
        try:
            return await cache.invalidate(**match)
        finally:
            await cache.close()
    removed = asyncio.run(run())
    _audit_admin(settings, "cache.invalidate", {"match": match, "removed": removed})
    print(json.dumps({"region": settings.region, "match": match, "removed": removed}))


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


def _tenant_of(settings, tenant: str, config: Path) -> str:
    if tenant not in settings.tenants:
        err.print(f"[red]{config}: tenants: no tenant {tenant!r} (configured: {sorted(settings.tenants)})[/red]")
        raise typer.Exit(2)
    return tenant


async def _with_store(settings, work):
    from deployments.retriever.deployment import open_store

    store = open_store(settings)
    await store.start()
    try:
        return await work(store)
    finally:
        await store.close()


@app.command()
def ingest(paths: list[Path] = typer.Argument(..., help="Files, or folders to read recursively."),
           tenant: str = typer.Option(..., "--tenant", "-t"), region: str = RegionOpt, config: Path = ConfigOpt,
           subject: str = typer.Option("", "--subject", help="The data subject these documents are about "
                                                              "(`embassy erase --subject` removes them)."),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Read text, Markdown, HTML and PDF files into the region's corpus for a tenant.

    Idempotent: an unchanged file is skipped, a changed one replaces its chunks. A file
    that cannot be read is reported and the rest go on; the exit status is 1 if any failed.
    """
    import asyncio
    import time

    from deployments.retriever.ingest import DocumentRedactor, expand, ingest as run_ingest
    from embassy.embeddings import shared_embedder

    settings = _settings(config, region)
    _tenant_of(settings, tenant, config)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        err.print(f"[red]no such file or folder: {', '.join(missing)}[/red]")
        raise typer.Exit(2)
    redact = None
    if settings.retriever.redact_documents:
        from deployments.guardrail.pii import PiiDetector

        t = settings.tenants[tenant]
        redact = DocumentRedactor(PiiDetector(ner=settings.retriever.document_ner), {**settings.guardrail.pii, **t.pii})
    files = expand(paths)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} files"),
                  TextColumn("{task.fields[chunks]} chunks, {task.fields[rate]:.1f} chunks/s"),
                  TimeElapsedColumn(), console=err) as bar:
        task = bar.add_task(f"ingesting into {settings.region}/{tenant}", total=len(files), chunks=0, rate=0.0)
        started = time.perf_counter()
        counts = {"chunks": 0}

        def step(event: str, n: int) -> None:
            if event == "chunks":
                counts["chunks"] += n
                bar.update(task, chunks=counts["chunks"],
                           rate=counts["chunks"] / max(time.perf_counter() - started, 1e-9))
            else:
                bar.advance(task, n)

        report = asyncio.run(_with_store(settings, lambda store: run_ingest(
            paths, store, tenant, shared_embedder().embed, settings.retriever, redact, progress=step,
            subject=subject)))
        bar.update(task, completed=len(files))
    for source, reason in report.failed:
        err.print(f"[red]failed: {source}: {reason}[/red]")
    summary = {"region": settings.region, "tenant": tenant, **report.as_dict(),
               "chunks_per_s": round(report.chunks_written / report.seconds, 1) if report.seconds else 0.0}
    if as_json:
        print(json.dumps(summary))
    else:
        console.print(f"{len(report.added)} added, {len(report.replaced)} replaced, {len(report.unchanged)} "
                      f"unchanged, {len(report.failed)} failed; {report.chunks_written} chunks written "
                      f"({summary['chunks_per_s']} chunks/s)")
    if report.failed:
        raise typer.Exit(1)


@corpus_app.command("stats")
def corpus_stats(tenant: str = typer.Option(None, "--tenant", "-t", help="Also list this tenant's documents."),
                 region: str = RegionOpt, config: Path = ConfigOpt,
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Documents, chunks and corpus version per tenant in the region."""
    import asyncio

    settings = _settings(config, region)

    async def work(store):
        out = {"region": settings.region, "backend": settings.retriever.backend, "tenants": await store.stats()}
        if tenant:
            docs = await store.documents(tenant)
            out["documents"] = [{"document_id": d.document_id, "source": d.source, "chunks": d.chunks}
                                for d in sorted(docs, key=lambda d: d.source)]
        return out
    result = asyncio.run(_with_store(settings, work))
    if as_json:
        print(json.dumps(result))
        return
    from rich.table import Table

    table = Table("tenant", "documents", "chunks", "corpus version", title=f"region {settings.region}")
    for name, row in result["tenants"].items():
        table.add_row(name, str(row["documents"]), str(row["chunks"]), row["corpus_version"])
    console.print(table)
    for d in result.get("documents", []):
        console.print(f"{d['document_id']}  {d['chunks']:>5}  {d['source']}")


@corpus_app.command("delete")
def corpus_delete(tenant: str = typer.Option(None, "--tenant", "-t", help="Whose documents; omit with --all "
                                                                          "and --region for every tenant."),
                  document: str = typer.Option(None, "--document", help="A document id (see `corpus stats -t`)."),
                  source: str = typer.Option(None, "--source", help="A document by the path it was ingested from."),
                  everything: bool = typer.Option(False, "--all", help="All of the tenant's (or region's) documents."),
                  region: str = RegionOpt, config: Path = ConfigOpt) -> None:
    """Remove a document, all of a tenant's documents, or the whole region's corpus."""
    import asyncio

    from deployments.retriever.ingest import source_of
    from deployments.retriever.store import document_id_for

    settings = _settings(config, region)
    if sum(x is not None and x is not False for x in (document, source, everything)) != 1:
        err.print("[red]name exactly one of --document, --source, --all[/red]")
        raise typer.Exit(2)
    if tenant is None and not (everything and region):
        err.print("[red]--tenant is required, except with --all --region R (every tenant of the region)[/red]")
        raise typer.Exit(2)
    if source is not None:
        document = document_id_for(tenant, source_of(Path(source)))

    async def work(store):
        if everything:
            return await (store.delete_tenant(tenant) if tenant else store.delete_region())
        return await store.delete_document(tenant, document)
    removed = asyncio.run(_with_store(settings, work))
    print(json.dumps({"region": settings.region, "tenant": tenant, "document_id": document,
                      "chunks_removed": removed}))
    if not everything and removed == 0:
        err.print(f"[red]no document {document} for tenant {tenant!r} in region {settings.region}[/red]")
        raise typer.Exit(1)



@app.command()
def erase(subject: str = typer.Option(..., "--subject", help="The data subject's id."),
          region: str = typer.Option(..., "--region", "-r", help="Must match the config's region."),
          tenant: str = typer.Option(..., "--tenant", "-t", help="The tenant whose data subject this is "
                                     "(subject ids are per tenant)."),
          config: Path = ConfigOpt) -> None:
    """Remove a data subject's cache entries, documents and audit content in the region; print
    what was removed. Exit 1 if a store could not be reached (the erasure is then incomplete:
    run it again)."""
    import asyncio
    import re

    from deployments.cache.deployment import build_cache

    settings = _settings(config, region)
    if not re.match(r"^[A-Za-z0-9._:-]{1,128}$", subject):
        err.print("[red]--subject: 1-128 letters, digits or ._:-[/red]")
        raise typer.Exit(2)
    _tenant_of(settings, tenant, config)
    out: dict = {"region": settings.region, "subject": subject, "tenant": tenant}
    # The erasure's own record comes first: the tombstones name it.
    requested = _audit_admin(settings, "erase.requested", {"subject": subject, "tenant": tenant})

    async def documents(store):
        removed = await store.delete_subject(subject, tenant)
        return [{"document_id": d.document_id, "source": d.source, "chunks": d.chunks} for d in removed]
    out["documents_removed"] = asyncio.run(_with_store(settings, documents))
    out["chunks_removed"] = sum(d["chunks"] for d in out["documents_removed"])
    failed = False
    url = _cache_redis_url(settings) if settings.cache.enabled else None
    if url:
        cache_settings = settings.model_copy(update={"cache": settings.cache.model_copy(update={"redis_url": url})})

        async def cache_entries() -> int:
            cache = build_cache(cache_settings)
            try:
                return await cache.invalidate(subject=subject, tenant=tenant)
            finally:
                await cache.close()
        try:
            out["cache_entries_removed"] = asyncio.run(cache_entries())
        except Exception as exc:  # Redis away: say so, and fail
            out["cache_entries_removed"] = None
            err.print(f"[red]cache: {type(exc).__name__}: {exc}; cache entries were not erased[/red]")
            failed = True
    else:
        out["cache_entries_removed"] = 0 if not settings.cache.enabled else None
        if settings.cache.enabled:
            err.print("[red]cache: no Redis (cache.redis_url unset and no running stack); entries not erased[/red]")
            failed = True
    if settings.audit.enabled:
        from embassy.audit import erase_subject

        out["audit_records_tombstoned"] = erase_subject(settings.audit_root, subject, tenant, "cli", requested)
    _audit_admin(settings, "erase", {k: v for k, v in out.items() if k != "documents_removed"})
    print(json.dumps(out))
    if failed:
        raise typer.Exit(1)


@audit_app.command("verify")
def audit_verify(region: str = RegionOpt, config: Path = ConfigOpt) -> None:
    """Check every chain of the region's audit trail; name the first record that was edited,
    deleted, reordered or truncated. Exit 1 on any problem."""
    from embassy.audit import REGISTRY, AuditIntegrityError, chains, key_for, verify_region

    settings = _settings(config, region)
    if not chains(settings.audit_root) and not (settings.audit_root / REGISTRY).exists():
        err.print(f"[red]no audit trail under {settings.audit_root}[/red]")
        raise typer.Exit(1)
    try:
        count, total, problems = verify_region(settings.audit_root, key_for(settings))
    except AuditIntegrityError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    for problem in problems:
        err.print(f"[red]{problem}[/red]")
    if problems:
        raise typer.Exit(1)
    console.print(f"{settings.region}: {count} chain(s), {total} records: intact")


@audit_app.command("export")
def audit_export(start: str = typer.Option(None, "--from", help="ISO 8601 time, e.g. 2026-11-01 or 2026-11-01T12:00:00Z."),
                 end: str = typer.Option(None, "--to", help="ISO 8601 time (exclusive)."),
                 out: Path = typer.Option(None, "--out", help="File to write; default stdout."),
                 region: str = RegionOpt, config: Path = ConfigOpt) -> None:
    """Write the region's audit records in a time range as JSON Lines, oldest first."""
    from datetime import datetime, timezone

    from embassy.audit import export

    settings = _settings(config, region)

    def when(value: str | None, name: str) -> float | None:
        if value is None:
            return None
        try:
            t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            err.print(f"[red]{name}: not an ISO 8601 time: {value!r}[/red]")
            raise typer.Exit(2)
        return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()
    lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in export(settings.audit_root, when(start, "--from"),
                                                                       when(end, "--to")))
    if out is None:
        for line in lines:
            sys.stdout.write(line)
    else:
        with open(out, "w") as f:
            f.writelines(lines)


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

@config_app.command("validate")
def config_validate(topology: Path = TopologyOpt) -> None:
    """Check the topology and residency policy, and every region's settings derived from it."""
    from pydantic import ValidationError

    from embassy.render import region_settings
    from embassy.settings import format_validation_error

    topo = _topology(topology)
    problems = []
    for region in topo.regions:
        try:
            region_settings(topo, region, topology)
        except ValidationError as exc:
            problems.append(format_validation_error(f"{topology}: regions.{region} (rendered settings)", exc))
    if problems:
        err.print("[red]" + "\n".join(problems) + "[/red]")
        raise typer.Exit(2)
    console.print(f"{topology}: {len(topo.regions)} regions, {sum(len(r.countries) for r in topo.regions.values())} "
                  f"countries, {len(topo.jurisdictions)} jurisdiction policies: valid")


@config_app.command("render")
def config_render(region: str = typer.Option(..., "--region", "-r"), topology: Path = TopologyOpt,
                  out: Path = typer.Option(None, "--out", help="Folder; default cluster_configs/regions/<region>/.")
                  ) -> None:
    """Write the region's settings, Serve config, Ray cluster launcher YAML and KubeRay RayService."""
    from embassy.render import render_region

    topo = _topology(topology)
    if region not in topo.regions:
        err.print(f"[red]{topology}: regions: no region {region!r} (regions: {sorted(topo.regions)})[/red]")
        raise typer.Exit(2)
    folder = out or DEFAULT_TOPOLOGY.parent / "regions" / region
    for kind, path in render_region(topo, region, topology, folder).items():
        console.print(f"{kind:12s} {path}")


@dns_app.command("serve")
def dns_serve(topology: Path = TopologyOpt, port: int = typer.Option(5353, "--port"),
              address: str = typer.Option("127.0.0.1", "--address"),
              geoip_db: Path = typer.Option(None, "--geoip-db", help="A MaxMind-format country database; "
                                            "default: one built from the topology's dns.subnets."),
              down: list[str] = typer.Option([], "--down", help="Treat this region as down (repeatable)."),
              health_interval: float = typer.Option(5.0, "--health-interval",
                                                    help="Seconds between /readyz probes of every region "
                                                         "(0: no probes; only --down counts)."),
              state_dir: Path = typer.Option(Path(".embassy/dns"), "--state-dir")) -> None:
    """Run PowerDNS's GeoIP backend for the topology's zone, re-rendering the zone when a
    region goes down or comes back (fail-over only where the residency policy allows)."""
    import signal
    import time

    from embassy.geodns import build_geoip_db, probe_down, start_geodns

    def _interrupt(*_):  # a supervisor's SIGTERM stops PowerDNS too (it runs in its own session)
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _interrupt)
    topo = _topology(topology)
    unknown = sorted(set(down) - set(topo.regions))
    if unknown:
        err.print(f"[red]--down: unknown region(s) {unknown}[/red]")
        raise typer.Exit(2)
    if geoip_db is None:
        if not topo.dns.subnets:
            err.print(f"[red]{topology}: dns.subnets is empty; pass --geoip-db with a country database[/red]")
            raise typer.Exit(2)
        geoip_db = build_geoip_db(topo.dns.subnets, state_dir / "subnets.mmdb")
    current = set(down) | (probe_down(topo) if health_interval > 0 else set())
    console.print(f"geo-DNS for {topo.dns.zone} on {address}:{port} (down: {sorted(current) or 'none'})")
    server = None
    try:
        # Inside the try: a SIGTERM while PowerDNS starts stops it too (start_geodns).
        server = start_geodns(topo, state_dir / "pdns", port, geoip_db, current, address)
        while True:
            time.sleep(health_interval if health_interval > 0 else 3600)
            now = set(down) | probe_down(topo)
            if now != current:
                server.stop()
                server = start_geodns(topo, state_dir / "pdns", port, geoip_db, now, address)
                console.print(f"regions down: {sorted(now) or 'none'}; zone re-rendered")
                current = now
    except RuntimeError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.stop()

def main() -> None:
    import os

    from embassy.stack import STATE_UMASK

    os.umask(STATE_UMASK)  # keys, audit records, vectors and logs: owner-only
    try:
        app()
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        sys.exit(2)


if __name__ == "__main__":
    main()
