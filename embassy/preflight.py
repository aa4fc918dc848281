"""Checks `embassy serve` makes before it starts anything: each problem a user can fix is one
line saying what is wrong and how to fix it (exit status 2), not a traceback minutes later
from deep inside Ray."""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path

from embassy.settings import EmbassySettings

SUPPORTED_PYTHON = (3, 11)  # pyproject.toml's requires-python


class PreflightError(RuntimeError):
    """Something the user must fix before the stack can start (its message says how)."""


def check_python(version: tuple[int, int] = tuple(sys.version_info[:2])) -> None:
    if tuple(version) != SUPPORTED_PYTHON:
        raise PreflightError(f"Embassy needs Python {SUPPORTED_PYTHON[0]}.{SUPPORTED_PYTHON[1]}, this is "
                             f"{version[0]}.{version[1]}: reinstall with `make install` "
                             "(PYTHON=/path/to/python3.11 picks the interpreter)")


def check_state_dir(settings: EmbassySettings, config: Path) -> Path:
    """The state folder (keys, audit trail, logs, cache and vector data) exists or can be
    made, and this user may write it."""
    path = settings.resolve(settings.state_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise PreflightError(f"state_dir {path} is not writable ({exc.strerror or exc}): choose another one with "
                             f"`state_dir:` in {config} or EMBASSY__STATE_DIR=/path") from None
    return path


def check_port(settings: EmbassySettings, config: Path) -> None:
    """The ingress port is not held by a listening program. (A port held only by closed
    connections in TIME_WAIT frees itself; `start_stack` waits for that.)"""
    with socket.socket() as s:
        try:
            s.bind((settings.host, settings.port))
            return
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise PreflightError(f"cannot bind {settings.host}:{settings.port} ({exc.strerror}): set `host:` "
                                     f"or `port:` in {config}") from None
            if exc.errno == errno.EACCES:
                raise PreflightError(f"port {settings.port} needs privileges this user lacks: pick a port "
                                     f"above 1023 with `port:` in {config} or EMBASSY__PORT=8100") from None
    try:
        with socket.create_connection((settings.host, settings.port), timeout=1):
            pass
    except OSError:
        return  # nobody listens: only TIME_WAIT, which clears within a minute
    raise PreflightError(f"port {settings.port} on {settings.host} is in use by another program: stop it "
                         f"(`embassy stop` if it is an Embassy stack) or pick another port with `port:` in "
                         f"{config} or EMBASSY__PORT=8100")


def check_artifacts(root: Path | None = None, required: tuple[str, ...] = ("embedder", "injection")) -> None:
    """The artefacts the graph needs are in the manifest, and every shipped model file is
    present and matches it."""
    from models.artifacts import ARTIFACTS_DIR, ArtifactError, artifact_file, entry, load_manifest

    root = root or ARTIFACTS_DIR
    try:
        for name in required:
            entry(name, root)
        for name, record in load_manifest(root)["artifacts"].items():
            for file in record["files"]:
                artifact_file(name, file, root)
    except ArtifactError as exc:
        raise PreflightError(str(exc)) from None


def check_tenants(settings: EmbassySettings, config: Path) -> None:
    """Every tenant's jurisdiction is one the topology has a policy for: the residency gate
    would refuse its every request (403), so refuse to start instead."""
    if settings.topology is None:
        return
    from embassy.errors import ConfigError
    from embassy.topology import load_topology

    try:
        problems = load_topology(settings.resolve(settings.topology)).tenant_problems(settings.tenants)
    except ConfigError as exc:
        raise PreflightError(str(exc)) from None
    if problems:
        raise PreflightError(f"{config}: {problems[0]}; correct the tenant or add the code to the topology"
                             + (f" ({len(problems) - 1} more)" if len(problems) > 1 else ""))


def check_all(settings: EmbassySettings, config: Path) -> None:
    check_python()
    check_tenants(settings, config)
    check_state_dir(settings, config)
    check_port(settings, config)
    check_artifacts(required=("embedder", "injection") + (("cache-verifier",) if settings.cache.enabled else ()))
