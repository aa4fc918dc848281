"""`embassy models`: the model registry and the local model store."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from embassy.cli.common import ConfigOpt, RegionOpt, _audit_admin, _settings, console, err

models_app = typer.Typer(help="The model registry and the local model store.", no_args_is_help=True)


def _prepare_models(settings) -> None:
    """Prepare every served model's default version."""
    from embassy.errors import ConfigError
    from models.prepare import PreparationError, prepare_model
    registry = settings.registry()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        for model_id in settings.models:
            task = bar.add_task(f"{model_id}: verifying", total=1.0)

            def step(desc: str, frac: float, task=task, model_id=model_id) -> None:
                bar.update(task, description=f"{model_id}: {desc}", completed=frac)

            try:
                result = prepare_model(registry[model_id], settings.resolve(settings.model_store), step)
            except (PreparationError, ConfigError) as exc:  # ConfigError: an unknown id or version
                err.print(f"[red]{exc}[/red]")
                raise typer.Exit(1)
            bar.update(task, description=f"{model_id}: {'prepared' if result.rebuilt else 'up to date'}"
                       f" at {result.path}", completed=1.0)


@models_app.command("list")
def models_list(config: Path = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """List registry manifests and whether each is prepared in the local store."""
    from rich.table import Table

    from models.prepare import verify_store

    settings = _settings(config)
    rows = [{"id": m.id, "version": m.version, "default": m.default, "context_length": m.context_length,
             "sha256": m.sha256, "served": m.id in settings.models, "description": m.description,
             "prepared": verify_store(settings.resolve(settings.model_store) / m.store_name, m)}
            for m in settings.registry().all()]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("id", "version", "default", "context", "sha256", "served here", "prepared", "description")
    for r in rows:
        table.add_row(r["id"], r["version"], "yes" if r["default"] else "", str(r["context_length"]),
                      r["sha256"][:12], "yes" if r["served"] else "no", "yes" if r["prepared"] else "no",
                      r["description"])
    console.print(table)


@models_app.command("prepare")
def models_prepare(config: Path = ConfigOpt) -> None:
    """Convert and verify every model this region serves (skipped when checksums match)."""
    _prepare_models(_settings(config))


def _region(config: Path):
    """The running region of this config, as embassy/rollout.py acts on it."""
    from embassy import stack
    from embassy.cli.cache import _cache_redis_url, invalidate_entries
    from embassy.rollout import Region
    from embassy.version_samples import clear, read_samples

    stack.raise_own_priority()  # a rollout acts on a region under load: it must not starve
    settings = _settings(config)
    state = stack.read_state(settings)
    if state is None or not stack.process_alive(state.pid):
        err.print(f"[red]no stack runs on port {settings.port}; start one with `embassy serve`[/red]")
        raise typer.Exit(1)
    url = _cache_redis_url(settings)
    if url:
        settings = settings.model_copy(update={"cache": settings.cache.model_copy(update={"redis_url": url})})
    env = stack.stack_environment(settings, stack.run_dir_path(settings), state.redis_url)

    def deploy() -> None:
        stack.deploy(settings, config, state.gcs_address, env, wait_s=600)

    def invalidate(model: str, version: str) -> int | None:
        return invalidate_entries(settings, {"model": model, "model_version": version}) if url else None

    return Region(settings, stack.rollout_path(settings), deploy,
                  audit=lambda action, fields: _audit_admin(settings, action, fields),
                  invalidate_cache=invalidate,
                  samples=(lambda m, v: read_samples(url, settings.region, m, v)) if url else None,
                  clear_samples=(lambda m, vs: clear(url, settings.region, m, vs)) if url else None)


def _run(action):
    """Run a rollout action; its refusals are exit code 1 with the reason."""
    from embassy.errors import ConfigError
    from embassy.rollout import RolloutError
    from models.prepare import PreparationError

    try:
        return action()
    except (RolloutError, PreparationError, ConfigError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _percent(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.rstrip("%"))
    except ValueError:
        err.print(f"error: --canary takes a percentage such as 10%, not {value!r}")
        raise typer.Exit(2)


def _report(route, verdict) -> None:
    err.print(f"{route.canary} at {route.canary_percent:g}%: {verdict.decision} ({verdict.reason})",
              markup=False, highlight=False)


@models_app.command("deploy")
def models_deploy(ref: str = typer.Argument(..., help="ID@VERSION"),
                  canary: str = typer.Option(None, "--canary", help="Start as a canary with this share, e.g. 10%."),
                  sticky: bool = typer.Option(False, help="Keep each conversation (x-embassy-conversation-id) "
                                                          "on one version."),
                  watch_canary: bool = typer.Option(True, "--watch/--no-watch",
                                                    help="Judge the canary and promote or roll back by itself."),
                  region: str = RegionOpt, config: Path = ConfigOpt, as_json: bool = typer.Option(False, "--json")
                  ) -> None:
    """Deploy a model version to the running region: a full swap, or a canary."""
    from embassy import rollout
    from models.prepare import prepare_model

    target = _region(config)
    if region is not None and region != target.settings.region:
        err.print(f"error: {config} is region {target.settings.region!r}, not {region!r}")
        raise typer.Exit(2)
    store = target.settings.resolve(target.settings.model_store)
    result = _run(lambda: rollout.deploy(target, ref, _percent(canary), sticky,
                                         prepare=lambda manifest: prepare_model(manifest, store)))
    if canary is not None and watch_canary:
        result = _run(lambda: rollout.watch(target, result["model"], _report))
    print(json.dumps(result)) if as_json else console.print(result)


@models_app.command("status")
def models_status(config: Path = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """Each model's stable version, its canary and share, and the canary's analysis so far."""
    from embassy import rollout

    target = _region(config)
    report = {}
    for model, route in target.routes().items():
        entry = route.model_dump(mode="json")
        if route.canary is not None and target.samples is not None:
            entry["analysis"] = rollout.analyse(target, model).as_dict()
        report[model] = entry
    print(json.dumps(report)) if as_json else console.print(report)


@models_app.command("promote")
def models_promote(model: str, full: bool = typer.Option(False, "--full", help="All traffic at once."),
                   config: Path = ConfigOpt) -> None:
    """Move the canary to its next traffic step (or to all traffic)."""
    from embassy import rollout

    target = _region(config)
    print(json.dumps(_run(lambda: rollout.promote(target, model, full=full))))


@models_app.command("rollback")
def models_rollback(model: str, reason: str = typer.Option("rolled back by an operator", "--reason"),
                    config: Path = ConfigOpt) -> None:
    """Drop the canary, or swap back to the version served before the last swap."""
    from embassy import rollout

    target = _region(config)
    print(json.dumps(_run(lambda: rollout.rollback(target, model, reason))))


@models_app.command("watch")
def models_watch(model: str, timeout: float = typer.Option(None, "--timeout", help="Seconds; default: until done."),
                 config: Path = ConfigOpt) -> None:
    """Judge a running canary until it is promoted or rolled back."""
    from embassy import rollout

    target = _region(config)
    print(json.dumps(_run(lambda: rollout.watch(target, model, _report, timeout_s=timeout))))
