"""The `embassy` command: the top-level app, one module per command group. Heavy modules are
imported inside commands so `--help` is instant."""

from __future__ import annotations

import sys

import typer

from embassy.cli import audit, cache, corpus, erasure, evaluate, keys, models, stack, topology, train
from embassy.cli.common import err
from embassy.errors import ConfigError

app = typer.Typer(help="Embassy: regional LLM serving over an OpenAI-compatible API.",
                  no_args_is_help=True, add_completion=False)
for command in (stack.serve, stack.status, stack.apply, stack.stop, corpus.ingest, erasure.erase):
    app.command()(command)
app.add_typer(models.models_app, name="models")
app.add_typer(keys.keys_app, name="keys")
app.add_typer(train.train_app, name="train")
app.add_typer(cache.cache_app, name="cache")
app.add_typer(evaluate.eval_app, name="eval")
app.add_typer(topology.config_app, name="config")
app.add_typer(topology.dns_app, name="dns")
app.add_typer(audit.audit_app, name="audit")
app.add_typer(corpus.corpus_app, name="corpus")


def main() -> None:
    import os

    from embassy.stack import STATE_UMASK

    os.umask(STATE_UMASK)  # keys, audit records, vectors and logs: owner-only
    try:
        app()
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        sys.exit(2)
