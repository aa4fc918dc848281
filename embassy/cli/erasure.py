"""`embassy erase`: a data subject's data out of the region (a top-level command, registered
in embassy/cli/__init__.py)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from embassy.cli.cache import _cache_redis_url
from embassy.cli.common import ConfigOpt, _audit_admin, _settings, err
from embassy.cli.corpus import _tenant_of, _with_store


def erase(subject: str = typer.Option(..., "--subject", help="The data subject's id."),
          region: str = typer.Option(..., "--region", "-r", help="Must match the config's region."),
          tenant: str = typer.Option(..., "--tenant", "-t", help="The tenant whose data subject this is "
                                     "(subject ids are per tenant)."),
          config: Path = ConfigOpt) -> None:
    """Remove a data subject's cache entries, documents and audit content in the region; print
    what was removed. Exit 1 if a store could not be reached (the erasure is then incomplete:
    run it again)."""
    import asyncio

    from deployments.cache.deployment import build_cache
    from embassy.erasure import SUBJECT_ID, RegionStores, erase_subject

    settings = _settings(config, region)
    if not SUBJECT_ID.match(subject):
        err.print("[red]--subject: 1-128 letters, digits or ._:-[/red]")
        raise typer.Exit(2)
    _tenant_of(settings, tenant, config)
    failed = False
    url = _cache_redis_url(settings) if settings.cache.enabled else None

    async def record(action: str, fields: dict) -> int | None:
        return _audit_admin(settings, action, fields)

    async def invalidate(match: dict) -> int | None:
        nonlocal failed
        if not settings.cache.enabled:
            return 0
        if not url:
            err.print("[red]cache: no Redis (cache.redis_url unset and no running stack); entries not erased[/red]")
            failed = True
            return None
        cache = build_cache(settings.model_copy(update={"cache": settings.cache.model_copy(update={"redis_url": url})}))
        try:
            return await cache.invalidate(**match)
        except Exception as exc:  # Redis away: say so, and fail
            err.print(f"[red]cache: {type(exc).__name__}: {exc}; cache entries were not erased[/red]")
            failed = True
            return None
        finally:
            await cache.close()

    async def delete_documents(subject: str, tenant: str) -> list[dict]:
        async def work(store):
            removed = await store.delete_subject(subject, tenant)
            return [{"document_id": d.document_id, "source": d.source, "chunks": d.chunks} for d in removed]
        return await _with_store(settings, work)

    async def tombstone(subject: str, tenant: str, by: str, requested: int | None) -> int:
        from embassy.audit import erase_subject as erase_subject_records

        return erase_subject_records(settings.audit_root, subject, tenant, by, requested)

    stores = RegionStores(record, invalidate, delete_documents, tombstone if settings.audit.enabled else None)
    print(json.dumps(asyncio.run(erase_subject(settings.region, subject, tenant, "cli", stores))))
    if failed:
        raise typer.Exit(1)
