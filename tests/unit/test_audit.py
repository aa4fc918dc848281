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


def _checkpoints(folder):
    path = folder / "checkpoints.jsonl"
    return path, [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_an_erasure_cannot_lose_a_record_appended_meanwhile(tmp_path):
    """erase_subject rewrites a segment under the writer's lock: an append from another
    process waits for it, instead of landing between its read and its rename (then lost,
    with its sequence number issued again)."""
    folder = tmp_path / "w"
    write(folder, n=4)
    code = ("import asyncio, sys; from embassy.audit import AuditWriter; "
            "w = AuditWriter(sys.argv[1], 'eu', b'k' * 32); "
            "[w.write_sync('request', 'chat.completion', tenant='acme', subject='cust-1', "
            "content={'prompt': f'late {i}'}) for i in range(40)]")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)])
    erased = 0
    while proc.poll() is None:
        erased += erase_subject(tmp_path, "cust-1", "acme", "operator", None)
    assert proc.wait() == 0
    result = verify_chain(folder, KEY)
    assert result.ok and result.records == 44, result.problem
    assert [r["seq"] for r in export(tmp_path)] == list(range(1, 45))
    assert erased >= 3  # each pass had new records of the subject to rewrite


def test_a_copied_checkpoint_marked_as_anchor_does_not_verify(tmp_path):
    """The HMAC covers the anchor flag and the segment: history before a forged anchor
    cannot be deleted unseen."""
    folder = tmp_path / "w"
    write(folder, n=6)
    path, cps = _checkpoints(folder)
    forged = {**cps[0], "anchor": True}
    path.write_bytes(path.read_bytes() + json.dumps(forged).encode() + b"\n")
    result = verify_chain(folder, KEY)
    assert not result.ok and "checkpoint signature does not verify" in result.problem


def test_a_replayed_checkpoint_is_refused(tmp_path):
    folder = tmp_path / "w"
    write(folder, n=3)
    write(folder, n=3)
    path, cps = _checkpoints(folder)
    path.write_bytes(path.read_bytes() + json.dumps(cps[0]).encode() + b"\n")  # validly signed, but old
    result = verify_chain(folder, KEY)
    assert not result.ok and "does not follow" in result.problem


def test_a_writer_refuses_to_continue_below_its_last_signed_checkpoint(tmp_path):
    from embassy.audit import AuditIntegrityError

    folder = tmp_path / "w"
    write(folder, n=6)
    seg, ls = lines(folder)
    seg.write_bytes(b"".join(ls[:3]))  # acknowledged records 4-6 lost
    writer = AuditWriter(folder, "eu", KEY)
    with pytest.raises(AuditIntegrityError, match="ends at seq 3 but seq 6 was written and signed"):
        writer.write_sync("request", "chat.completion", content={"prompt": "new"})
    assert len(lines(folder)[1]) == 3  # nothing re-issued over the lost records


def test_a_chain_deleted_whole_or_planted_is_found(tmp_path):
    import shutil

    from embassy.audit import verify_region

    write(tmp_path / "ingress-a", n=2)
    write(tmp_path / "ingress-b", n=2)
    assert verify_region(tmp_path, KEY) == (2, 4, [])
    shutil.rmtree(tmp_path / "ingress-b")
    _, _, problems = verify_region(tmp_path, KEY)
    assert problems == [f"{tmp_path / 'ingress-b'}: registered chain is missing (deleted)"]
    shutil.copytree(tmp_path / "ingress-a", tmp_path / "planted")
    _, _, problems = verify_region(tmp_path, KEY)
    assert any("planted: chain is not in chains.jsonl" in p for p in problems)


def test_a_missing_key_is_refused_once_a_trail_exists(tmp_path):
    import yaml

    from embassy.audit import AuditIntegrityError, key_for, writer_for
    from embassy.settings import load_settings

    config = tmp_path / "eu.yaml"
    config.write_text(yaml.safe_dump({"region": "eu", "models": ["smollm2-135m-instruct"],
                                      "state_dir": str(tmp_path / "state")}))
    settings = load_settings(config, environ={})
    writer_for(settings, "ingress-x").write_sync("request", "chat.completion", content={"prompt": "q"})
    key_file = tmp_path / "state" / "audit.key"
    assert key_file.stat().st_mode & 0o077 == 0  # owner only
    key_file.unlink()
    with pytest.raises(AuditIntegrityError, match="audit key .* is missing, but an audit trail signed with it"):
        key_for(settings)
    assert not key_file.exists()  # no silent new key
