"""The region's documents for retrieval: `embassy ingest` (a top-level command, registered in
embassy/cli/__init__.py) and `embassy corpus`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from embassy.cli.common import ConfigOpt, RegionOpt, _settings, console, err

corpus_app = typer.Typer(help="The region's documents for retrieval (RAG).", no_args_is_help=True)


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
