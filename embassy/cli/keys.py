"""`embassy keys`: API keys."""

from __future__ import annotations

from pathlib import Path

import typer

from embassy.cli.common import ConfigOpt, _settings, err

keys_app = typer.Typer(help="API keys (stored only as hashes).", no_args_is_help=True)


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
