"""`embassy audit`: verify and export the region's audit trail."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from embassy.cli.common import ConfigOpt, RegionOpt, _settings, console, err

audit_app = typer.Typer(help="The region's tamper-evident audit trail.", no_args_is_help=True)


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
