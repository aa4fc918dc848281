"""The audit trail: region-local, append-only, hash-chained, with HMAC-signed checkpoints.

Layout under `<state_dir>/audit/<writer>/` (one chain per writer: each ingress replica has
its own, so no two processes append to one file):

    segment-000001.jsonl ...   records, one JSON object a line, rotated by size
    checkpoints.jsonl          after every flushed batch: {"seq", "hash", "segment", "hmac"}

A record is `{seq, ts, region, kind, action, tenant, request_id, subject, fields,
content_hash, prev, hash, content}`. `hash` is the SHA-256 of the record without `hash`
and `content`; `content_hash` covers `content`, so an erasure can replace the content by a
tombstone (`{"erased": true}`) and the chain still verifies, while any other edit of the
content, of a field, a deleted, reordered or inserted record, or a cut-off tail does not.
Checkpoints carry an HMAC (key from settings) over the last sequence number and hash of
each batch; a log truncated below an acknowledged batch fails against them, and a forger
without the key cannot write new ones.

Durability: `append()` returns once its batch is written and fsynced (group commit: the
records of concurrent requests share one fsync). Content is what the guard let through
(redacted text) or only a hash; raw PII is never written.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

GENESIS = "0" * 64
TOMBSTONE = {"erased": True}


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: dict) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in record.items() if k not in ("hash", "content")})).hexdigest()


def content_hash(content: Any) -> str:
    return hashlib.sha256(_canonical(content)).hexdigest()


def _sign(key: bytes, seq: int, last_hash: str) -> str:
    return hmac.new(key, f"{seq}:{last_hash}".encode(), hashlib.sha256).hexdigest()


class AuditWriter:
    """One chain. Async; one instance per process (the ingress replica's)."""

    def __init__(self, folder: Path, region: str, key: bytes, max_segment_bytes: int = 16 * 2**20,
                 retention_s: float = 183 * 86400, batch_window_s: float = 0.005) -> None:
        self.folder = Path(folder)
        self.region = region
        self.key = key
        self.max_segment_bytes = max_segment_bytes
        self.retention_s = retention_s
        self.batch_window_s = batch_window_s
        self._pending: list[tuple[dict, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None
        self._seq, self._last = 0, GENESIS
        self._segment: Path | None = None
        self._opened = False

    # -- opening ---------------------------------------------------------------------

    def _open(self) -> None:
        """Continue the chain from disk (a restarted writer picks up where it stopped)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        segments = sorted(self.folder.glob("segment-*.jsonl"))
        if segments:
            self._segment = segments[-1]
            _drop_torn_tail(self._segment)
            last = _last_line(self._segment)
            if last is not None:
                rec = json.loads(last)
                self._seq, self._last = rec["seq"], rec["hash"]
        else:
            self._segment = self.folder / "segment-000001.jsonl"
        self._opened = True

    # -- appending -------------------------------------------------------------------

    async def append(self, kind: str, action: str, *, tenant: str | None = None, request_id: str | None = None,
                     subject: str | None = None, fields: dict | None = None, content: Any = None) -> int:
        """Write one record; returns its sequence number once it is on disk (fsynced)."""
        fut = asyncio.get_running_loop().create_future()
        self._pending.append(({"kind": kind, "action": action, "tenant": tenant, "request_id": request_id,
                               "subject": subject, "fields": fields or {}, "content": content}, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())
        return await asyncio.shield(fut)

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.batch_window_s)  # let concurrent requests join this fsync
        batch, self._pending = self._pending, []
        try:
            seqs = await asyncio.to_thread(self._write, [item for item, _ in batch])
        except BaseException as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            raise
        for (_, fut), seq in zip(batch, seqs):
            if not fut.done():
                fut.set_result(seq)
        if self._pending:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    def write_sync(self, kind: str, action: str, **kw: Any) -> int:
        """For commands outside an event loop (the CLI's admin actions)."""
        item = {"kind": kind, "action": action, "tenant": kw.get("tenant"), "request_id": kw.get("request_id"),
                "subject": kw.get("subject"), "fields": kw.get("fields") or {}, "content": kw.get("content")}
        return self._write([item])[0]

    def _write(self, items: list[dict]) -> list[int]:
        import fcntl

        # A lock, so that two processes given the same chain (two CLI commands) take turns;
        # the chain's end is re-read under it.
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._open()
            return self._write_locked(items)

    def _write_locked(self, items: list[dict]) -> list[int]:
        lines, seqs = [], []
        for item in items:
            self._seq += 1
            content = item.pop("content")
            record = {"seq": self._seq, "ts": round(time.time(), 6), "region": self.region, **item,
                      "content_hash": content_hash(content), "prev": self._last}
            record["hash"] = record_hash(record)
            record["content"] = content
            self._last = record["hash"]
            lines.append(_canonical(record) + b"\n")
            seqs.append(self._seq)
        self._rotate_if_full()
        with open(self._segment, "ab") as f:
            f.write(b"".join(lines))
            f.flush()
            os.fsync(f.fileno())
        checkpoint = {"seq": self._seq, "hash": self._last, "segment": self._segment.name, "ts": round(time.time(), 3)}
        checkpoint["hmac"] = _sign(self.key, self._seq, self._last)
        with open(self.folder / "checkpoints.jsonl", "ab") as f:
            f.write(_canonical(checkpoint) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        return seqs

    def _rotate_if_full(self) -> None:
        if self._segment.exists() and self._segment.stat().st_size >= self.max_segment_bytes:
            number = int(self._segment.stem.split("-")[1]) + 1
            self._segment = self.folder / f"segment-{number:06d}.jsonl"
            self._prune()

    def _prune(self) -> None:
        """Drop whole segments past retention; the checkpoints file records where the kept
        chain starts (an HMAC-signed anchor), so verification still holds."""
        cutoff = time.time() - self.retention_s
        segments = sorted(self.folder.glob("segment-*.jsonl"))
        for seg in segments[:-1]:
            last = _last_line(seg)
            if last is None or json.loads(last)["ts"] >= cutoff:
                break
            rec = json.loads(last)
            anchor = {"anchor": True, "seq": rec["seq"], "hash": rec["hash"], "segment": seg.name,
                      "ts": round(time.time(), 3), "hmac": _sign(self.key, rec["seq"], rec["hash"])}
            with open(self.folder / "checkpoints.jsonl", "ab") as f:
                f.write(_canonical(anchor) + b"\n")
                f.flush()
                os.fsync(f.fileno())
            seg.unlink()


def _drop_torn_tail(path: Path) -> None:
    """A crash mid-write leaves a last line without its newline: that batch was never
    acknowledged, so it is cut off before the chain continues."""
    with open(path, "r+b") as f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        pos = end
        while pos > 0:  # back to the last newline
            start = max(0, pos - 65536)
            f.seek(start)
            cut = f.read(pos - start).rfind(b"\n")
            if cut >= 0:
                pos = start + cut + 1
                break
            pos = start
        f.truncate(pos)
        os.fsync(f.fileno())


def _last_line(path: Path) -> str | None:
    """The last complete line, read from the end (segments grow to many MB)."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        block, data = 65536, b""
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            data = f.read(end - start) + data
            end = start
            lines = [line for line in data.split(b"\n") if line.strip()]
            if len(lines) >= 2 or (lines and start == 0):
                return lines[-1].decode()
    return None


def load_key(path: Path) -> bytes:
    """The checkpoint key; made (32 random bytes, mode 0600) when the file does not exist."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32).hex().encode())
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise ValueError(f"{path}: an audit key needs at least 32 bytes")
    return key


def writer_for(settings, name: str) -> AuditWriter | None:
    """The region's writer for one process (`name` keeps chains of processes apart)."""
    a = settings.audit
    if not a.enabled:
        return None
    return AuditWriter(settings.audit_root / name, settings.region, key_for(settings), a.max_segment_mb * 2**20,
                       a.retention_days * 86400, a.batch_window_ms / 1000)


def key_for(settings) -> bytes:
    """The region's checkpoint key (`audit.key_file`, default <state_dir>/audit.key)."""
    a = settings.audit
    return load_key(settings.resolve(a.key_file) if a.key_file else settings.resolve(settings.state_dir) / "audit.key")


# -- reading, verifying, erasing ------------------------------------------------------


def chains(root: Path) -> list[Path]:
    """Every writer's folder under a region's audit root."""
    return sorted(p.parent for p in Path(root).glob("*/checkpoints.jsonl"))


def records(folder: Path) -> Iterator[tuple[Path, int, dict]]:
    for seg in sorted(Path(folder).glob("segment-*.jsonl")):
        with open(seg, "rb") as f:
            for number, line in enumerate(f, 1):
                if line.strip() and line.endswith(b"\n"):  # a torn last line was never acknowledged
                    yield seg, number, json.loads(line)


@dataclass
class VerifyResult:
    ok: bool
    records: int
    problem: str | None = None  # names the first bad record: file, line, seq and what is wrong


def verify_chain(folder: Path, key: bytes) -> VerifyResult:
    folder = Path(folder)
    checkpoints = []
    with open(folder / "checkpoints.jsonl", "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            cp = json.loads(line)
            if not hmac.compare_digest(cp.get("hmac", ""), _sign(key, cp["seq"], cp["hash"])):
                return VerifyResult(False, 0, f"{folder / 'checkpoints.jsonl'}:{number}: checkpoint signature "
                                              "does not verify (edited, or signed with another key)")
            checkpoints.append(cp)
    anchors = [cp for cp in checkpoints if cp.get("anchor")]
    expected_prev = anchors[-1]["hash"] if anchors else GENESIS
    expected_seq = anchors[-1]["seq"] + 1 if anchors else 1
    by_seq = {cp["seq"]: cp["hash"] for cp in checkpoints if not cp.get("anchor")}
    count = 0
    for seg, line, rec in records(folder):
        where = f"{seg}:{line} (seq {rec.get('seq')})"
        if rec.get("seq") != expected_seq:
            kind = "deleted or reordered" if isinstance(rec.get("seq"), int) and rec["seq"] > expected_seq \
                else "reordered or duplicated"
            return VerifyResult(False, count, f"{where}: expected seq {expected_seq}: a record was {kind}")
        if rec.get("prev") != expected_prev:
            return VerifyResult(False, count, f"{where}: does not chain to the record before it")
        if record_hash(rec) != rec.get("hash"):
            return VerifyResult(False, count, f"{where}: record edited (its hash does not match)")
        if rec.get("content") != TOMBSTONE and content_hash(rec.get("content")) != rec.get("content_hash"):
            return VerifyResult(False, count, f"{where}: content edited (content hash does not match)")
        if rec["seq"] in by_seq and by_seq[rec["seq"]] != rec["hash"]:
            return VerifyResult(False, count, f"{where}: differs from its signed checkpoint")
        expected_prev, expected_seq = rec["hash"], rec["seq"] + 1
        count += 1
    signed_through = max(by_seq, default=0)
    if signed_through >= expected_seq:
        return VerifyResult(False, count, f"{folder}: truncated: the log ends at seq {expected_seq - 1} but seq "
                                          f"{signed_through} was written and signed")
    return VerifyResult(True, count)


def erase_subject(root: Path, subject: str, tenant: str | None = None) -> int:
    """Replace the content of every record about `subject` (of `tenant`, when given) with a
    tombstone (the chain still verifies: hashes cover the content's hash, not the content).
    Returns the count."""
    erased = 0
    for folder in chains(root):
        for seg in sorted(folder.glob("segment-*.jsonl")):
            lines = seg.read_bytes().splitlines(keepends=True)
            changed = False
            for i, line in enumerate(lines):
                if not line.strip():
                    continue
                rec = json.loads(line)
                if rec.get("subject") == subject and rec.get("content") != TOMBSTONE \
                        and (tenant is None or rec.get("tenant") == tenant):
                    rec["content"] = TOMBSTONE
                    lines[i] = _canonical(rec) + b"\n"
                    changed, erased = True, erased + 1
            if changed:
                tmp = seg.with_suffix(".tmp")
                tmp.write_bytes(b"".join(lines))
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, seg)
    return erased


def export(root: Path, start: float | None = None, end: float | None = None) -> Iterator[dict]:
    """Records of every chain with `start <= ts < end`, oldest first."""
    out = []
    for folder in chains(root):
        for _, _, rec in records(folder):
            if (start is None or rec["ts"] >= start) and (end is None or rec["ts"] < end):
                out.append(rec)
    yield from sorted(out, key=lambda r: (r["ts"], r["seq"]))
