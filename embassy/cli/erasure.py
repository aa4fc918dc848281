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
