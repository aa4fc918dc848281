"""The region's local stack: serve, status, apply, stop (top-level commands, registered in
embassy/cli/__init__.py)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from embassy.cli.common import ConfigOpt, RegionOpt, _audit_admin, _settings, _topology, console, err
from embassy.cli.models import _prepare_models


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


def stop(config: Path = ConfigOpt) -> None:
    """Stop the stack started by `embassy serve` with this config."""
    from embassy import stack

    settings = _settings(config)
    if stack.stop_stack(settings):
        console.print("stopped")
    else:
        console.print("not running")
