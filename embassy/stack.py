"""Start and stop a local single-region stack: a Ray head node plus the regional app.

The Ray head runs as `ray start --head --block` in its own process group, with every
port it opens chosen free on loopback, so several stacks (a developer's and the test
suite's) can share a machine. Its state lives in `<state_dir>/run-<port>.json`.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import http.client
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from embassy.redis_server import start_redis, stop_pid
from embassy.settings import EmbassySettings

Progress = Callable[[str], None]


def offline_environment() -> dict[str, str]:
    """Nothing leaves the machine: no hub downloads, no usage statistics, no telemetry."""
    return {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
            "VLLM_NO_USAGE_STATS": "1", "VLLM_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1",
            "RAY_USAGE_STATS_ENABLED": "0", "RAY_USAGE_STATS_PROMPT_ENABLED": "0",
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
            "TOKENIZERS_PARALLELISM": "false"}


# Set in every process of a stack, so `stop_stack` finds the ones Ray moved to their own
# session (Serve's proxy and controller do that) by their environment.
STACK_MARKER = "EMBASSY_STACK_RUN_DIR"


def serve_environment(settings: EmbassySettings) -> dict[str, str]:
    """Ray Serve's throughput-optimized mode, with the ingress replica serving HTTP itself.

    Why: on 2 cores every Python hop per streamed token takes CPU from the engine. In
    benchmarks/graph_overhead.py (8 concurrent streams of 64 tokens, same run against bare
    vLLM) Serve's defaults (a proxy actor in front, user code on its own thread) gave 0.62
    of bare vLLM's tokens/s; this mode (gRPC between replicas, user code on the replica's
    loop, no proxy hop) gave 0.68-0.70. Direct ingress binds the ingress replica to a port
    from a range, so the range is pinned to the configured port (one ingress replica per
    host; put a load balancer in front of several hosts).

    Every Serve application's top deployment binds a port of its own in this mode, and each
    model version is an application (graphs/regional.py): the range holds the region's
    port first, then up to three versions per model (stable, canary, one being retired).
    Serve hands out the lowest free port, and the region's ingress starts in seconds while
    an engine takes a minute, so the ingress gets `port`; the versions' ports serve nothing
    (their deployments have no HTTP handler) and stay on `host`.
    """
    span = 1 + 3 * len(settings.models)
    grpc_port = free_port()
    env = {}
    service_cpus = settings.cluster.service_cpus()
    if service_cpus:
        # The engine's worker inherits the stack's pinning; hand it the other cores.
        engine_cpus = sorted(set(os.sched_getaffinity(0)) - service_cpus)
        env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, engine_cpus))
    return {**env, "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            # The controller's loop runs every 0.1 s by default and competes with the engine
            # for the same 2 cores; 0.5 s still reacts to load and failures within a second.
            "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": os.environ.get("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "0.5"),
            # Serve's port ranges exclude their upper bound: exactly one port each.
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(settings.port),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(settings.port + span),
            "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc_port),
            "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc_port + span)}


# Above Ray's default worker ports (10002-19999), which another Ray on the machine may use.
_PORT_FLOOR = 20000
_handed_out: set[int] = set()


def _ephemeral_floor() -> int:
    """The lowest port of the range the OS hands out for port 0 and outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, that nothing on the machine takes by chance before it is bound.

    Why not bind port 0: the OS picks that from the ephemeral range, which every outgoing
    connection and every Ray worker (worker ports 0) also draws from, so a port chosen for a
    second stack before the first one starts can be taken by the first's workers (seen in
    CI: the two-regions test). Ports below that range are only ever taken on purpose.
    """
    low = _ephemeral_floor()
    if low - _PORT_FLOOR < 1000:  # an unusual range: fall back to the OS's pick
        with socket.socket() as s:
            s.bind((host, 0))
            return s.getsockname()[1]
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(_PORT_FLOOR, low)
        if port in _handed_out:  # not bound yet by whoever asked for it
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port on {host} between {_PORT_FLOOR} and {low}")


@dataclass
class StackState:
    region: str
    url: str
    gcs_address: str
    pid: int
    temp_dir: str
    metrics_dir: str
    log_file: str
    redis_url: str | None = None  # the Redis this stack started (None: configured, or cache off)
    redis_pid: int | None = None


def run_dir_path(settings: EmbassySettings) -> Path:
    """The folder of the stack on this settings' port: token, metrics, logs."""
    return settings.resolve(settings.state_dir) / f"run-{settings.port}"


def state_path(settings: EmbassySettings) -> Path:
    return settings.resolve(settings.state_dir) / f"run-{settings.port}.json"


def read_state(settings: EmbassySettings) -> StackState | None:
    try:
        return StackState(**json.loads(state_path(settings).read_text()))
    except (OSError, json.JSONDecodeError, TypeError):  # none recorded, or the folder is unusable
        return None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET on a keep-alive connection that this side closes, so the TIME_WAIT lands here
    and not on the server's port (see `_wait_until_port_free`)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _start_ray_head(settings: EmbassySettings, run_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str, Path]:
    gcs_port = free_port()
    log_file = run_dir / "ray-head.log"
    ray_bin = Path(sys.executable).with_name("ray")
    # Short temp dir: Ray's unix socket paths must stay under 107 characters.
    temp_dir = Path(tempfile.mkdtemp(prefix=f"emb-{settings.port}-"))
    cmd = [str(ray_bin), "start", "--head", "--block", f"--port={gcs_port}",
           "--node-ip-address=127.0.0.1", f"--num-cpus={settings.cluster.num_cpus}", "--num-gpus=0",
           f"--object-store-memory={settings.cluster.object_store_mb * 1024 * 1024}",
           "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}",
           f"--ray-client-server-port={free_port()}", f"--node-manager-port={free_port()}",
           f"--object-manager-port={free_port()}", f"--metrics-export-port={free_port()}",
           f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
           f"--runtime-env-agent-port={free_port()}",
           # 0: workers bind ports the OS picks, so two stacks never race for one range.
           "--min-worker-port=0", "--max-worker-port=0"]
    with log_file.open("ab") as log:
        # Unpinned: pinned to one core from the start, Ray's daemons (each imports Ray, 5 s
        # of CPU on a slow host) took over 30 s, and the raylet gave up on its dashboard
        # agent. `_pin_to_service_cpus` moves them once the head is up.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**env, "PYTHONUNBUFFERED": "1"},
                                start_new_session=True, cwd=str(settings.resolve(Path("."))))
    return proc, f"127.0.0.1:{gcs_port}", temp_dir


HEAD_STARTED = b"Ray runtime started."


def _wait_for_head(proc: subprocess.Popen, log_file: Path, timeout: float = 180) -> None:
    """Wait until `ray start` says the head node is up: GCS, raylet and agents all
    registered (an open GCS port alone is not that; the driver then found no node)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray head exited early; see {log_file}")
        if HEAD_STARTED in log_file.read_bytes():
            return
        time.sleep(0.5)
    raise RuntimeError(f"ray head did not start within {timeout:.0f}s; see {log_file}")


def _pin_to_service_cpus(marker: str, cpus: set[int]) -> int:
    """Move every thread of the stack's processes to `cpus`; what they start later
    (workers, replicas, the engine's processes) inherits it. Returns the threads moved.
    Threads, not processes: Linux sets affinity per thread."""
    moved = 0
    for pid in _stack_pids(marker):
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
                moved += 1
            except OSError:  # exited meanwhile
                pass
    return moved


STATE_UMASK = 0o077


def start_stack(settings: EmbassySettings, config_path: Path, progress: Progress = print,
                ready_timeout_s: float = 900) -> StackState:
    """Start Ray and the region's app; return when `/readyz` answers 200.

    Raises:
        RuntimeError: a stack already runs on this port, or the app did not become ready.
    """
    # Everything the stack writes (audit trail, keys, vectors, run folders, logs) is the
    # owner's alone; Ray's and Serve's processes inherit the mask from here.
    os.umask(STATE_UMASK)
    existing = read_state(settings)
    if existing and process_alive(existing.pid):
        raise RuntimeError(f"a stack already runs at {existing.url} (pid {existing.pid}); "
                           "stop it with `embassy stop` first")
    # The ingress replica binds this exact port (direct ingress); a busy port would fail
    # the deployment deep inside Serve, so say it here.
    progress(f"waiting for port {settings.port}")
    _wait_until_port_free(settings.host, settings.port)
    run_dir = run_dir_path(settings)
    shutil.rmtree(run_dir, ignore_errors=True)
    metrics_dir = run_dir / "metrics"
    metrics_dir.mkdir(parents=True)
    # Ray's token auth with a token of this stack's own: other local users cannot join the
    # cluster, and a token left in ~/.ray by another Ray session cannot lock us out.
    token_file = run_dir / "ray-auth-token"
    with os.fdopen(os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(secrets.token_hex(32))
    redis = None
    if settings.cache.enabled and not settings.cache.redis_url:
        progress("starting Redis for the semantic cache")
        redis = start_redis(run_dir, maxmemory_mb=settings.cache.maxmemory_mb,
                            eviction_policy=settings.cache.eviction_policy)
    env = stack_environment(settings, run_dir, redis.url if redis else None)

    progress("starting Ray head node")
    try:
        proc, address, temp_dir = _start_ray_head(settings, run_dir, env)
    except BaseException:
        if redis:
            redis.stop()
        raise
    log_file = run_dir / "ray-head.log"
    url = f"http://{settings.host}:{settings.port}"
    state = StackState(settings.region, url, address, proc.pid, str(temp_dir), str(metrics_dir), str(log_file),
                       redis.url if redis else None, redis.pid if redis else None)
    state_path(settings).write_text(json.dumps(asdict(state), indent=2))
    try:
        _wait_for_head(proc, log_file)
        if service_cpus := settings.cluster.service_cpus():
            _pin_to_service_cpus(f"{STACK_MARKER}={run_dir}", service_cpus)
        progress("deploying the regional app (vLLM takes a minute on CPU)")
        deploy(settings, config_path, address, env)
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            try:
                status, _ = http_get(f"{url}/readyz")
                if status == 200:
                    return state
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"ray head exited; see {log_file}")
            time.sleep(1)
        raise RuntimeError(f"the app was not ready within {ready_timeout_s:.0f}s; see {log_file}")
    except BaseException:
        # Keep Serve's logs for the post-mortem: stopping deletes Ray's temp dir.
        shutil.copytree(Path(temp_dir) / "session_latest" / "logs", run_dir / "logs",
                        dirs_exist_ok=True, ignore_dangling_symlinks=True)
        stop_stack(settings)
        raise


def stack_environment(settings: EmbassySettings, run_dir: Path, redis_url: str | None) -> dict[str, str]:
    """The environment of every process of the stack. A Redis the stack started reaches
    the settings as an `EMBASSY__CACHE__REDIS_URL` override."""
    env = {**os.environ, **offline_environment(), **serve_environment(settings),
           "PROMETHEUS_MULTIPROC_DIR": str(run_dir / "metrics"), STACK_MARKER: str(run_dir),
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(run_dir / "ray-auth-token")}
    if redis_url:
        env["EMBASSY__CACHE__REDIS_URL"] = redis_url
    return env


def apply_config(settings: EmbassySettings, config_path: Path) -> StackState:
    """Deploy a changed region file to the running stack. Serve updates what changed: the
    guardrail's policies and thresholds (its `user_config`) in place on running replicas;
    anything else by rolling the affected deployment.

    Raises:
        RuntimeError: no stack runs on this settings' port.
    """
    state = read_state(settings)
    if state is None or not process_alive(state.pid):
        raise RuntimeError(f"no stack runs on port {settings.port}; start one with `embassy serve`")
    deploy(settings, config_path, state.gcs_address,
           stack_environment(settings, run_dir_path(settings), state.redis_url), wait_s=300)
    return state


def raise_own_priority() -> None:
    """The driver runs while the region serves: under load on a small host its imports alone
    took minutes at normal priority (a swap under 8 streams on 2 cores), so it goes first."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    except PermissionError:  # not root and no CAP_SYS_NICE: normal priority
        pass


class DeployFailed(RuntimeError):
    """Serve could not start an application of the config (`app`, Serve's `message`)."""

    def __init__(self, app: str, message: str) -> None:
        super().__init__(f"{app} failed to deploy: {message}")
        self.app, self.message = app, message


def rollout_path(settings: EmbassySettings) -> Path:
    """The running stack's model routes (`embassy models`); a fresh stack starts without."""
    return run_dir_path(settings) / "rollout.json"


def region_app_name(settings: EmbassySettings) -> str:
    return f"embassy-{settings.region}"


def deploy(settings: EmbassySettings, config_path: Path, address: str, env: dict[str, str],
           wait_s: float = 0) -> None:
    """Hand the region's applications to Serve from a short-lived driver process
    (embassy/serve_driver.py), so this process stays light.

    Raises:
        DeployFailed: (with `wait_s`) an application failed to start.
        RuntimeError: the driver failed otherwise.
    """
    cmd = [sys.executable, "-m", "embassy.serve_driver", "--address", address,
           "--config", str(config_path.resolve()), "--app", region_app_name(settings),
           "--host", settings.host, "--proxy-port", str(free_port()), "--wait", str(wait_s),
           "--rollout", str(rollout_path(settings))]
    result = subprocess.run(cmd, env=env, cwd=str(settings.resolve(Path("."))), capture_output=True, text=True,
                            preexec_fn=raise_own_priority)
    if result.returncode != 0:
        for line in result.stderr.splitlines():
            if line.startswith("DEPLOY_FAILED "):
                app, _, message = line.removeprefix("DEPLOY_FAILED ").partition(": ")
                raise DeployFailed(app, message + "".join(
                    "\n" + rest for rest in result.stderr.split(line, 1)[1].strip().splitlines()[:20]))
        tail = "\n".join(result.stderr.strip().splitlines()[-40:])
        raise RuntimeError(f"deploying the app failed (replica logs: <state_dir>/run-{settings.port}/logs):\n{tail}")


def stop_stack(settings: EmbassySettings, grace_s: float = 30) -> bool:
    """Stop the stack started on this settings' port. Returns False if none was recorded."""
    state = read_state(settings)
    if state is None:
        return False
    if process_alive(state.pid):
        # The whole process group: ray's GCS, raylet, workers, vLLM engine processes.
        try:
            os.killpg(state.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _group_alive(state.pid):
            time.sleep(0.5)
        try:
            os.killpg(state.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _kill_stragglers(f"{STACK_MARKER}={Path(state.metrics_dir).parent}")
    if state.redis_pid:
        stop_pid(state.redis_pid)
    shutil.rmtree(state.temp_dir, ignore_errors=True)
    state_path(settings).unlink(missing_ok=True)
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _stack_pids(marker: str) -> list[int]:
    """Processes whose environment carries the stack's marker."""
    needle = marker.encode() + b"\0"
    pids = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit() or int(proc_dir.name) == os.getpid():
            continue
        try:
            if needle in (proc_dir / "environ").read_bytes() + b"\0":
                pids.append(int(proc_dir.name))
        except OSError:
            continue
    return pids


def kill_orphaned_engines() -> list[int]:
    """Kill vLLM engine processes of this stack whose replica died (SIGKILL, OOM): they
    outlive it, re-parented to init, each holding its KV cache and the engine's cores
    (docs/PLATFORM_NOTES.md). An LLM replica calls this before it starts its own engine.

    Why not Ray's per-worker process groups (RAY_process_group_cleanup_enabled), which kill
    a dead worker's group: with them, a second and third Ray cluster on a 2-core host failed
    to start (the raylet gave up waiting for its dashboard agent), 3 runs out of 3.
    """
    marker = os.environ.get(STACK_MARKER)
    if not marker:
        return []
    killed = []
    for pid in _stack_pids(f"{STACK_MARKER}={marker}"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            name, ppid = stat[stat.index("(") + 1:stat.rindex(")")], int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        # An engine core whose parent is no longer a Serve replica (init, or a subreaper,
        # adopted it) is orphaned; its worker goes down with it.
        if name.startswith("VLLM::Engine") and not _is_replica(ppid):
            for victim in [pid, *_children(pid)]:
                try:
                    os.kill(victim, signal.SIGKILL)
                    killed.append(victim)
                except ProcessLookupError:
                    pass
    return killed


def _is_replica(pid: int) -> bool:
    try:
        return b"ServeReplica" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _kill_stragglers(marker: str, wait_s: float = 15) -> None:
    """Kill what is left of a stack and wait until it is gone, so its ports are free."""
    deadline = time.monotonic() + wait_s
    while (pids := _stack_pids(marker)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def _wait_until_port_free(host: str, port: int, wait_s: float = 70) -> None:
    """Wait until the ingress can bind `port`.

    Serve's direct-ingress server binds without SO_REUSEADDR, so connections the previous
    server closed first (TIME_WAIT, up to 60 s on Linux) keep the port from it; this
    check binds the same way.
    """
    deadline = time.monotonic() + wait_s
    while True:
        with socket.socket() as s:
            try:
                s.bind((host, port))
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"port {port} on {host} is in use by another program") from None
        time.sleep(0.5)
