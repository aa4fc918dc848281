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
Checkpoints carry an HMAC (key from settings) over everything verification trusts in them
(sequence number, hash, segment, anchor flag, time); a log truncated below an acknowledged
batch fails against them, a forger without the key cannot write new ones, and a writer
refuses to continue a chain that ends below its last signed checkpoint. `chains.jsonl` at
the region's audit root is a signed registry of chains, so a chain deleted whole is found.
Erasure takes the writer's lock (no record is lost to a concurrent append) and leaves a
tombstone that names who erased and the erasure's own audit record.

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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

GENESIS = "0" * 64
REGISTRY = "chains.jsonl"


class AuditIntegrityError(RuntimeError):
    """The trail on disk is not one this writer may continue (it says why and what to do)."""


def tombstone(by: str, erasure_seq: int | None) -> dict:
    return {"erased": True, "by": by, "erasure_record": erasure_seq, "ts": round(time.time(), 3)}


def is_tombstone(content: Any) -> bool:
    return isinstance(content, dict) and content.get("erased") is True


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: dict) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in record.items() if k not in ("hash", "content")})).hexdigest()


def content_hash(content: Any) -> str:
    return hashlib.sha256(_canonical(content)).hexdigest()


def keyed_digest(key: bytes, content: Any) -> str:
    """An HMAC of content a record may not keep: it proves a copy that an auditor holds
    matches, and unlike a plain hash it cannot be found by hashing guesses (a short prompt
    or an identifier has few enough values to try them all)."""
    return hmac.new(key, b"content:" + _canonical(content), hashlib.sha256).hexdigest()


def _sign(key: bytes, entry: dict) -> str:
    """A checkpoint's or registry line's HMAC: over all of it but the HMAC itself."""
    return hmac.new(key, b"signed:" + _canonical({k: v for k, v in entry.items() if k != "hmac"}),
                    hashlib.sha256).hexdigest()


def _signed(key: bytes, entry: dict) -> dict:
    return {**entry, "hmac": _sign(key, entry)}


def _verified(key: bytes, entry: dict) -> bool:
    return hmac.compare_digest(str(entry.get("hmac", "")), _sign(key, entry))


def _append_line(path: Path, line: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "ab") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


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
        """Continue the chain from disk (a restarted writer picks up where it stopped), but
        never from below its last signed checkpoint: that would re-issue sequence numbers
        over records that were acknowledged and then lost."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self._opened:  # once per writer: registration is permanent
            _register(self.folder, self.key)
        segments = sorted(self.folder.glob("segment-*.jsonl"))
        self._seq, self._last = 0, GENESIS
        if segments:
            self._segment = segments[-1]
            _drop_torn_tail(self._segment)
            last = _last_line(self._segment)
            if last is not None:
                rec = json.loads(last)
                self._seq, self._last = rec["seq"], rec["hash"]
        else:
            self._segment = self.folder / "segment-000001.jsonl"
        signed = _last_signed_seq(self.folder)
        if signed > self._seq:
            raise AuditIntegrityError(
                f"{self.folder}: the chain ends at seq {self._seq} but seq {signed} was written and signed; "
                "records were lost. Restore the folder from backup, or move it aside to start a new chain "
                "(`embassy audit verify` names the problem)")
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
        # A lock, so that two processes given the same chain (two CLI commands) take turns;
        # the chain's end is re-read under it.
        self.folder.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.folder / ".lock"):
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
        _append_line(self._segment, b"".join(lines))
        checkpoint = _signed(self.key, {"seq": self._seq, "hash": self._last, "segment": self._segment.name,
                                        "ts": round(time.time(), 3)})
        _append_line(self.folder / "checkpoints.jsonl", _canonical(checkpoint) + b"\n")
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
            anchor = _signed(self.key, {"anchor": True, "seq": rec["seq"], "hash": rec["hash"], "segment": seg.name,
                                        "ts": round(time.time(), 3)})
            _append_line(self.folder / "checkpoints.jsonl", _canonical(anchor) + b"\n")
            seg.unlink()


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) on `lock_path`, held for the block: writers of a
    chain, erasure and registration take turns across processes."""
    import fcntl

    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _last_signed_seq(folder: Path) -> int:
    """The sequence number of the chain's last checkpoint (0: none yet)."""
    path = folder / "checkpoints.jsonl"
    if not path.exists():
        return 0
    last = _last_line(path)
    return int(json.loads(last)["seq"]) if last else 0


def _register(folder: Path, key: bytes) -> None:
    """Enter a chain in its region's signed registry, once (under the registry's lock)."""
    root = folder.parent
    with _exclusive(root / ".registry.lock"):
        if folder.name in registered(root):
            return
        _append_line(root / REGISTRY, _canonical(_signed(key, {"chain": folder.name,
                                                                "ts": round(time.time(), 3)})) + b"\n")


def registered(root: Path) -> dict[str, dict]:
    """Chain name -> its registry entry (signatures are checked by `verify_registry`)."""
    path = Path(root) / REGISTRY
    if not path.exists():
        return {}
    out = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            entry = json.loads(line)
            out.setdefault(entry.get("chain"), entry)
    return out


def verify_registry(root: Path, key: bytes) -> list[str]:
    """Problems with the set of chains: a registry line that does not verify, a registered
    chain that is gone (deleted whole), a chain on disk that was never registered."""
    root = Path(root)
    problems, names = [], set()
    path = root / REGISTRY
    lines = path.read_bytes().splitlines() if path.exists() else []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        entry = json.loads(line)
        names.add(entry.get("chain"))
        if not _verified(key, entry):
            problems.append(f"{path}:{number}: registry entry does not verify (edited, or another key)")
    on_disk = {folder.name for folder in chains(root)}
    problems += [f"{root / name}: registered chain is missing (deleted)" for name in sorted(names - on_disk)]
    problems += [f"{root / name}: chain is not in {REGISTRY} (planted, or the registry was edited)"
                 for name in sorted(on_disk - names)]
    return problems


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


def load_key(path: Path, create: bool = True) -> bytes:
    """The checkpoint key; made (32 random bytes, mode 0600) when the file does not exist and
    `create` (a region with no trail yet). A trail whose key is gone cannot be verified, and a
    new key would hide that: refuse.

    Raises:
        AuditIntegrityError: the key file is missing and `create` is false.
    """
    path = Path(path)
    if not path.exists():
        if not create:
            raise AuditIntegrityError(
                f"the audit key {path} is missing, but an audit trail signed with it exists; restore the key "
                "from backup (a new key could not verify the trail, and would hide its loss)")
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
    path = settings.resolve(a.key_file) if a.key_file else settings.resolve(settings.state_dir) / "audit.key"
    return load_key(path, create=not chains(settings.audit_root))


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
            where = f"{folder / 'checkpoints.jsonl'}:{number}"
            if not _verified(key, cp):
                return VerifyResult(False, 0, f"{where}: checkpoint signature does not verify (edited, or signed "
                                              "with another key)")
            same_kind = [c for c in checkpoints if bool(c.get("anchor")) == bool(cp.get("anchor"))]
            if same_kind and cp["seq"] <= same_kind[-1]["seq"]:
                return VerifyResult(False, 0, f"{where}: checkpoint seq {cp['seq']} does not follow "
                                              f"{same_kind[-1]['seq']} (replayed or reordered)")
            checkpoints.append(cp)
    anchors = [cp for cp in checkpoints if cp.get("anchor")]
    if anchors and (folder / anchors[-1]["segment"]).exists():
        return VerifyResult(False, 0, f"{folder}: anchored segment {anchors[-1]['segment']} still exists")
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
        if not is_tombstone(rec.get("content")) and content_hash(rec.get("content")) != rec.get("content_hash"):
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


def verify_region(root: Path, key: bytes) -> tuple[int, int, list[str]]:
    """Every chain of a region and its registry: (chains, records, problems)."""
    problems = verify_registry(root, key)
    total, found = 0, chains(root)
    for folder in found:
        result = verify_chain(folder, key)
        total += result.records
        if not result.ok:
            problems.append(result.problem)
    return len(found), total, problems


def erase_subject(root: Path, subject: str, tenant: str, by: str, erasure_seq: int | None) -> int:
    """Replace the content of every record about `subject` of `tenant` (subject ids are per
    tenant) with a tombstone naming `by` and the erasure's own record, `erasure_seq` (the
    chain still verifies: hashes cover the content's hash, not the content). Each chain is
    rewritten under its writer's lock, so an append cannot land between read and rename.
    Returns the count."""
    erased = 0
    mark = tombstone(by, erasure_seq)
    for folder in chains(root):
        with _exclusive(folder / ".lock"):
            for seg in sorted(folder.glob("segment-*.jsonl")):
                lines = seg.read_bytes().splitlines(keepends=True)
                changed = False
                for i, line in enumerate(lines):
                    if not line.strip() or not line.endswith(b"\n"):
                        continue
                    rec = json.loads(line)
                    if rec.get("subject") == subject and rec.get("tenant") == tenant \
                            and not is_tombstone(rec.get("content")):
                        rec["content"] = mark
                        lines[i] = _canonical(rec) + b"\n"
                        changed, erased = True, erased + 1
                if changed:
                    tmp = seg.with_suffix(".tmp")
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    with os.fdopen(fd, "wb") as f:
                        f.write(b"".join(lines))
                        f.flush()
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
