"""The audit trail: verification catches an edit, a deletion, a reordering and a truncation,
accepts a tombstoned erasure, rejects another key; acknowledged records survive a kill."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from embassy.audit import AuditWriter, chains, erase_subject, export, verify_chain

KEY = b"k" * 32


def write(folder, n=6, **kw):
    writer = AuditWriter(folder, "eu", KEY, **kw)

    async def run():
        return await asyncio.gather(*(writer.append(
            "request", "chat.completion", tenant="acme", request_id=f"r{i}", subject="cust-1" if i % 2 else None,
            fields={"status": 200}, content={"prompt": f"question <PERSON_1> {i}"}) for i in range(n)))
    return writer, asyncio.run(run())


def lines(folder):
    seg = sorted(folder.glob("segment-*.jsonl"))[0]
    return seg, seg.read_bytes().splitlines(keepends=True)


def test_an_untouched_chain_verifies(tmp_path):
    _, seqs = write(tmp_path / "w")
    assert sorted(seqs) == [1, 2, 3, 4, 5, 6]
    result = verify_chain(tmp_path / "w", KEY)
    assert result.ok and result.records == 6


@pytest.mark.parametrize("tamper,message", [
    (lambda ls: ls.__setitem__(2, ls[2].replace(b"question", b"QUESTION")), "content edited"),
    (lambda ls: ls.__setitem__(2, ls[2].replace(b'"status":200', b'"status":500')), "record edited"),
    (lambda ls: ls.pop(2), "a record was deleted"),
    (lambda ls: ls.insert(1, ls.pop(3)), "expected seq 2"),
    (lambda ls: [ls.pop() for _ in range(2)], "truncated"),
])
def test_tampering_is_named_at_the_first_bad_record(tmp_path, tamper, message):
    folder = tmp_path / "w"
    write(folder)
    seg, ls = lines(folder)
    tamper(ls)
    seg.write_bytes(b"".join(ls))
    result = verify_chain(folder, KEY)
    assert not result.ok and message in result.problem
    if message != "truncated":
        assert f"{seg}:" in result.problem


def test_an_erasure_tombstone_keeps_the_chain_valid_and_names_who_erased(tmp_path):
    write(tmp_path / "w")
    assert erase_subject(tmp_path, "cust-1", "globex", "operator", 7) == 0  # another tenant's subject of that id
    assert erase_subject(tmp_path, "cust-1", "acme", "tenant:acme", 7) == 3
    assert verify_chain(tmp_path / "w", KEY).ok
    erased = [r for r in export(tmp_path) if r["subject"] == "cust-1"]
    assert len(erased) == 3
    assert all(r["content"]["erased"] is True and r["content"]["by"] == "tenant:acme"
               and r["content"]["erasure_record"] == 7 for r in erased)
    assert all("erased" not in (r["content"] or {}) for r in export(tmp_path) if r["subject"] != "cust-1")


def test_another_key_cannot_vouch_for_the_log(tmp_path):
    write(tmp_path / "w")
    result = verify_chain(tmp_path / "w", b"x" * 32)
    assert not result.ok and "signature" in result.problem


def test_rotation_and_retention_keep_a_verifiable_chain(tmp_path):
    folder = tmp_path / "w"
    writer = AuditWriter(folder, "eu", KEY, max_segment_bytes=600, retention_s=0)
    for i in range(12):
        writer.write_sync("admin", "cache.invalidate", fields={"i": i}, content={"match": {"tenant": "acme"}})
    assert verify_chain(folder, KEY).ok
    assert len(list(folder.glob("segment-*.jsonl"))) < 12  # old segments pruned past retention
    assert any(json.loads(l).get("anchor") for l in (folder / "checkpoints.jsonl").read_text().splitlines())


def test_export_by_time(tmp_path):
    write(tmp_path / "w", n=3)
    now = time.time()
    assert len(list(export(tmp_path, now - 60, now + 60))) == 3
    assert list(export(tmp_path, now + 60)) == []


def test_acknowledged_records_survive_a_killed_process(tmp_path):
    folder = tmp_path / "w"
    script = f"""
import asyncio, sys
from pathlib import Path
from embassy.audit import AuditWriter
w = AuditWriter(Path({str(folder)!r}), "eu", {KEY!r})
async def main():
    i = 0
    while True:
        seq = await w.append("request", "chat", content={{"i": i}})
        print(seq, flush=True)
        i += 1
asyncio.run(main())
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    acked = []
    while len(acked) < 200:
        acked.append(int(proc.stdout.readline()))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    result = verify_chain(folder, KEY)
    assert result.ok, result.problem
    assert result.records >= acked[-1]  # nothing acknowledged is lost
    # A restarted writer continues the same chain.
    write(folder, n=2)
    assert verify_chain(folder, KEY).ok and chains(tmp_path) == [folder]


def test_a_torn_last_line_is_ignored_and_cut_before_the_chain_continues(tmp_path):
    folder = tmp_path / "w"
    write(folder, n=3)
    seg, _ = lines(folder)
    with open(seg, "ab") as f:
        f.write(b'{"seq": 4, "half a reco')  # the process died mid-write: never acknowledged
    assert verify_chain(folder, KEY).ok
    write(folder, n=2)
    result = verify_chain(folder, KEY)
    assert result.ok and result.records == 5


def test_audit_cli_verifies_names_the_problem_and_exports(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from embassy.cli import app
    from embassy.settings import load_settings
    from embassy.audit import writer_for

    config = tmp_path / "eu.yaml"
    config.write_text(yaml.safe_dump({"region": "eu", "models": ["smollm2-135m-instruct"],
                                      "state_dir": str(tmp_path / "state")}))
    settings = load_settings(config, environ={})
    writer = writer_for(settings, "ingress-test")
    for i in range(3):
        writer.write_sync("request", "chat.completion", tenant="acme", content={"prompt": f"q{i}"})
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify", "-c", str(config)])
    assert ok.exit_code == 0 and "3 records" in ok.output
    exported = runner.invoke(app, ["audit", "export", "--from", "2020-01-01", "-c", str(config)])
    assert [json.loads(line)["content"]["prompt"] for line in exported.stdout.splitlines()] == ["q0", "q1", "q2"]
    assert runner.invoke(app, ["audit", "export", "--from", "yesterday", "-c", str(config)]).exit_code == 2
    seg = next((settings.audit_root / "ingress-test").glob("segment-*.jsonl"))
    seg.write_text(seg.read_text().replace('"q1"', '"edited"'))
    bad = runner.invoke(app, ["audit", "verify", "-c", str(config)])
    assert bad.exit_code == 1 and "seq 2" in bad.output and "content edited" in bad.output
