"""Process placement and environment of a local stack (no processes started)."""

from __future__ import annotations

import os

import pytest

from embassy import stack
from embassy.settings import load_settings
from tests.conftest import LOCAL_CONFIG


def test_nothing_leaves_the_machine():
    env = stack.offline_environment()
    assert env["HF_HUB_OFFLINE"] == "1" and env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert env["VLLM_NO_USAGE_STATS"] == "1" and env["DO_NOT_TRACK"] == "1"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs at least 2 CPUs to split")
def test_services_go_to_the_last_core_and_the_engine_gets_the_rest():
    settings = load_settings(LOCAL_CONFIG, environ={})
    cpus = sorted(os.sched_getaffinity(0))
    assert settings.cluster.service_cpus() == {cpus[-1]}
    env = stack.serve_environment(settings)
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == ",".join(map(str, cpus[:-1]))
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == str(settings.port)


def test_pinning_off_leaves_scheduling_to_the_os():
    settings = load_settings(LOCAL_CONFIG, environ={"EMBASSY__CLUSTER__PIN_SERVICES_TO_RESERVED_CPU": "false"})
    assert settings.cluster.service_cpus() is None
    assert "VLLM_CPU_OMP_THREADS_BIND" not in stack.serve_environment(settings)


def test_a_busy_port_is_reported_before_anything_starts(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {port}"):
            stack._wait_until_port_free("127.0.0.1", port, wait_s=0.5)


def test_free_ports_stay_out_of_the_range_the_os_hands_to_workers_and_clients():
    low = stack._ephemeral_floor()
    ports = [stack.free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(stack._PORT_FLOOR <= p < low for p in ports)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))  # free when handed out


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs at least 2 CPUs to split")
def test_pinning_moves_every_thread_of_the_stacks_processes_and_no_other(tmp_path):
    import subprocess
    import sys
    import time

    marker = f"{stack.STACK_MARKER}={tmp_path}"
    # A stack process with a second thread, and a process outside the stack.
    code = "import threading, time; threading.Thread(target=time.sleep, args=(60,)).start(); time.sleep(60)"
    inside = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, stack.STACK_MARKER: str(tmp_path)})
    outside = subprocess.Popen([sys.executable, "-c", code])
    try:
        while len(os.listdir(f"/proc/{inside.pid}/task")) < 2:
            time.sleep(0.05)
        reserved = {sorted(os.sched_getaffinity(0))[-1]}
        assert stack._pin_to_service_cpus(marker, reserved) == 2
        for tid in os.listdir(f"/proc/{inside.pid}/task"):
            assert os.sched_getaffinity(int(tid)) == reserved
        assert os.sched_getaffinity(outside.pid) == os.sched_getaffinity(0)
    finally:
        inside.kill()
        outside.kill()


def test_a_head_that_exits_before_it_started_is_reported(tmp_path):
    import subprocess
    import sys

    log = tmp_path / "ray-head.log"
    log.write_bytes(b"")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    with pytest.raises(RuntimeError, match="exited early"):
        stack._wait_for_head(proc, log, timeout=30)
