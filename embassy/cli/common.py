"""What every command group shares: the consoles, the common options and the helpers that
load a region's settings or the topology, audit an admin action and draw a progress bar."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from embassy.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent.parent / "cluster_configs" / "local.yaml"
DEFAULT_TOPOLOGY = Path(__file__).resolve().parent.parent.parent / "cluster_configs" / "regions.yaml"

console = Console()
err = Console(stderr=True)

ConfigOpt = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="Region settings YAML.")
RegionOpt = typer.Option(None, "--region", "-r", help="Region to run; must match the config's region.")
TopologyOpt = typer.Option(DEFAULT_TOPOLOGY, "--topology", help="The multi-region topology YAML.")


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


def _progress_bar():
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), console=err)
