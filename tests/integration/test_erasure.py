"""`embassy erase`: a data subject's cache entries (real Redis) and documents (LanceDB) in a
region are removed and reported; other subjects' data stays."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace

import redis
import yaml
from typer.testing import CliRunner

from embassy.cli import app
from embassy.graph_types import RequestContext
from embassy.redis_server import start_redis
from tests.integration.test_cache_redis import MODEL, make_cache, req, verifier  # noqa: F401 (a fixture)

runner = CliRunner()
CANARY = "CANARY-7f3e-ERASE-ME"


def test_erase_removes_the_subjects_cache_entries_and_documents_only(tmp_path, verifier):  # noqa: F811
    server = start_redis(tmp_path / "redis", maxmemory_mb=64)
    try:
        index = f"t-{uuid.uuid4().hex[:8]}"
        config = tmp_path / "eu.yaml"
        config.write_text(yaml.safe_dump({
            "region": "eu", "models": [MODEL], "state_dir": str(tmp_path / "state"),
            "cache": {"redis_url": server.url, "index": index},
            "tenants": {"acme": {"jurisdiction": "EU", "models": [MODEL]}}}))

        async def store():
            cache = make_cache(server.url, verifier, index=index)
            for subject, text in (("cust-42", f"Where is shipment {CANARY}?"), ("cust-7", "Where is shipment 7?")):
                request = req(text)
                ctx = RequestContext(uuid.uuid4().hex, "acme", "eu", "EU", subject)
                assert await cache.store(replace(request, ctx=ctx), f"In Rotterdam ({subject}).", 5)
            await cache.close()
        asyncio.run(store())
        mine, other = tmp_path / "cust42.md", tmp_path / "general.md"
        mine.write_text(f"# Shipment file\nThe shipment {CANARY} of cust-42 is held in Rotterdam for inspection.\n")
        other.write_text("# Procedures\nShipments held for inspection are released within two days.\n")
        assert runner.invoke(app, ["ingest", str(mine), "-t", "acme", "--subject", "cust-42", "-c", str(config)]).exit_code == 0
        assert runner.invoke(app, ["ingest", str(other), "-t", "acme", "-c", str(config)]).exit_code == 0

        def on_disk() -> bytes:
            return b"".join(p.read_bytes() for p in (tmp_path / "state" / "vectors").rglob("*") if p.is_file())
        assert CANARY.encode() in on_disk()  # the scan below can see the text

        result = runner.invoke(app, ["erase", "--subject", "cust-42", "--region", "eu", "-t", "acme", "-c", str(config)])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["cache_entries_removed"] == 1 and report["chunks_removed"] >= 1
        assert [d["source"].endswith("cust42.md") for d in report["documents_removed"]] == [True]
        client = redis.Redis.from_url(server.url)
        values = b"".join(v for k in client.scan_iter("*") if client.type(k) == b"hash"
                          for v in client.hgetall(k).values())
        assert CANARY.encode() not in values and b"Where is shipment 7?" in values
        stats = json.loads(runner.invoke(app, ["corpus", "stats", "-t", "acme", "--json", "-c", str(config)]).stdout)
        assert [d["source"].endswith("general.md") for d in stats["documents"]] == [True]
        assert CANARY.encode() not in on_disk()  # not in an old version of the table either
        wrong_region = runner.invoke(app, ["erase", "--subject", "cust-42", "--region", "us", "-t", "acme", "-c", str(config)])
        assert wrong_region.exit_code == 2
    finally:
        server.stop()
