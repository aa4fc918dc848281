"""`embassy models`: the model registry and the local model store."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from embassy.cli.common import ConfigOpt, _settings, console, err

models_app = typer.Typer(help="The model registry and the local model store.", no_args_is_help=True)


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
