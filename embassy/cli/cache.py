"""`embassy cache`: the semantic cache's entries."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from embassy.cli.common import ConfigOpt, _audit_admin, _settings, err

cache_app = typer.Typer(help="The semantic cache: its verifier and its entries.", no_args_is_help=True)


def _cache_redis_url(settings) -> str | None:
    """The configured Redis, else the one the local stack started."""
    from embassy.stack import read_state

    if settings.cache.redis_url:
        return settings.cache.redis_url
    state = read_state(settings)
    return state.redis_url if state else None


def invalidate_entries(settings, match: dict[str, str]) -> int:
    """Remove the entries matching `match` from the Redis of `settings.cache.redis_url`."""
    import asyncio

    from deployments.cache.deployment import build_cache

    async def run() -> int:
        cache = build_cache(settings)
        try:
            return await cache.invalidate(**match)
        finally:
            await cache.close()
    return asyncio.run(run())


@cache_app.command("invalidate")
def cache_invalidate(
        tenant: str = typer.Option(None, "--tenant"), model: str = typer.Option(None, "--model"),
        model_version: str = typer.Option(None, "--model-version"),
        corpus_version: str = typer.Option(None, "--corpus-version"),
        region: str = typer.Option(None, "--region", help="Every entry of the region (its Redis is the region's)."),
        config: Path = ConfigOpt) -> None:
    """Remove the region's cache entries that match every option given."""
    from embassy.erasure import check_match
    from embassy.errors import InvalidRequest

    settings = _settings(config)
    try:  # the same rules as POST /v1/admin/cache/invalidate
        match = check_match({k: v for k, v in {"tenant": tenant, "model": model, "model_version": model_version,
                                               "corpus_version": corpus_version, "region": region}.items() if v},
                            settings.region)
    except InvalidRequest as exc:
        err.print(f"[red]{exc.message} (options: --tenant --model --model-version --corpus-version --region)[/red]")
        raise typer.Exit(2)
    url = _cache_redis_url(settings)
    if not url:
        err.print("[red]no Redis: set cache.redis_url or start the stack with `embassy serve`[/red]")
        raise typer.Exit(1)
    settings = settings.model_copy(update={"cache": settings.cache.model_copy(update={"redis_url": url})})
    removed = invalidate_entries(settings, match)
    _audit_admin(settings, "cache.invalidate", {"match": match, "removed": removed})
    print(json.dumps({"region": settings.region, "match": match, "removed": removed}))
