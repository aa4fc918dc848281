"""An LLM replica frees what a dead replica's engine held: processes named like vLLM's
engine core, of this stack, whose parent is gone, are killed with their children; another
stack's are left alone. (Stand-in processes renamed with prctl, not vLLM.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from embassy import stack

# The engine core renames itself; its worker is its child.
CHILD = ("import ctypes, time; ctypes.CDLL(None).prctl(15, b'VLLM::Worker'); time.sleep(120)")
ENGINE = ("import ctypes, subprocess, sys, time; ctypes.CDLL(None).prctl(15, b'VLLM::EngineCore'); "
          f"subprocess.Popen([sys.executable, '-c', {CHILD!r}]); time.sleep(120)")


def orphaned_engine(marker: str) -> int:
    """Start an engine stand-in from a parent that exits at once: it is adopted by init."""
    out = subprocess.run([sys.executable, "-c", f"import subprocess, sys; print(subprocess.Popen("
                          f"[sys.executable, '-c', {ENGINE!r}], stdout=subprocess.DEVNULL, "
                          "stderr=subprocess.DEVNULL).pid)"],
                         env={**os.environ, stack.STACK_MARKER: marker}, capture_output=True, text=True, check=True)
    return int(out.stdout)


def alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_orphaned_engines_of_this_stack_are_killed_and_others_left(tmp_path, monkeypatch):
    ours, theirs = orphaned_engine(str(tmp_path / "ours")), orphaned_engine(str(tmp_path / "theirs"))
    try:
        time.sleep(1.0)  # both renamed and each has started its worker
        worker = stack._children(ours)
        assert worker, "the stand-in engine has no worker"
        monkeypatch.setenv(stack.STACK_MARKER, str(tmp_path / "ours"))
        killed = stack.kill_orphaned_engines()
        assert ours in killed and worker[0] in killed
        time.sleep(0.5)
        assert not alive(ours) and not alive(worker[0]) and alive(theirs)
    finally:
        for pid in [theirs, *stack._children(theirs)]:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def test_without_a_stack_marker_nothing_is_touched(monkeypatch):
    monkeypatch.delenv(stack.STACK_MARKER, raising=False)
    assert stack.kill_orphaned_engines() == []
