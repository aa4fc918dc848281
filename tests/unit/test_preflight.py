"""`embassy serve` and `scripts/install.sh` on bad ground: a taken port, an unwritable state
folder, a corrupt artefact, the wrong Python. Each is one line saying what is wrong and how to
fix it, and exit status 2, before anything starts."""

from __future__ import annotations

import functools
import shutil
import socket
import subprocess

import pytest
import yaml
from typer.testing import CliRunner

from embassy import preflight
from embassy.cli import app
from embassy.settings import PROJECT_ROOT
from embassy.stack import free_port
from models.artifacts import ARTIFACTS_DIR

runner = CliRunner()


def region_file(tmp_path, **over):
    path = tmp_path / "region.yaml"
    path.write_text(yaml.safe_dump({"region": "eu", "models": ["smollm2-135m-instruct"], "host": "127.0.0.1",
                                    "port": free_port(), "state_dir": str(tmp_path / "state"),
                                    "model_store": str(tmp_path / "store"), **over}))
    return path


def serve(path):
    result = runner.invoke(app, ["serve", "--config", str(path)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result.exit_code, lines


def test_a_port_held_by_another_program_is_refused_at_once(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code, lines = serve(region_file(tmp_path, port=port))
    assert code == 2 and len(lines) == 1, lines
    assert f"port {port} on 127.0.0.1 is in use by another program" in lines[0] and "EMBASSY__PORT" in lines[0]
    assert not (tmp_path / "state" / f"run-{port}").exists()  # nothing was started


def test_an_unwritable_state_dir_is_refused(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # a file where a folder should be: unwritable even for root
    code, lines = serve(region_file(tmp_path, state_dir=str(blocker / "state")))
    assert code == 2 and len(lines) == 1, lines
    assert f"state_dir {blocker / 'state'} is not writable" in lines[0] and "EMBASSY__STATE_DIR" in lines[0]


def test_a_corrupt_artifact_is_refused_naming_the_file(tmp_path, monkeypatch):
    copy = tmp_path / "artifacts"
    shutil.copytree(ARTIFACTS_DIR, copy)
    head = copy / "injection" / "head.int8.onnx"
    head.write_bytes(b"\0" * head.stat().st_size)
    monkeypatch.setattr(preflight, "check_artifacts", functools.partial(preflight.check_artifacts, copy))
    code, lines = serve(region_file(tmp_path))
    assert code == 2 and len(lines) == 1, lines
    assert str(head) in lines[0] and "does not match the manifest" in lines[0]


def test_the_wrong_python_is_named():
    with pytest.raises(preflight.PreflightError, match="needs Python 3.11, this is 3.10"):
        preflight.check_python((3, 10))
    preflight.check_python((3, 11))


def test_install_refuses_an_older_python_in_one_line(tmp_path):
    fake = tmp_path / "python3.10"
    fake.write_text("#!/bin/sh\necho 3.10\n")
    fake.chmod(0o755)
    result = subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "install.sh")], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHON": str(fake)}, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: Embassy needs Python 3.11, and {fake} is 3.10: install python3.11 or set "
        "PYTHON=/path/to/python3.11"]


def test_an_artifact_the_graph_needs_but_the_manifest_lacks_is_named(tmp_path):
    import json

    copy = tmp_path / "artifacts"
    shutil.copytree(ARTIFACTS_DIR, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["artifacts"]["cache-verifier"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(preflight.PreflightError, match="no artefact 'cache-verifier'"):
        preflight.check_artifacts(copy, required=("embedder", "injection", "cache-verifier"))
    preflight.check_artifacts(copy, required=("embedder", "injection"))  # a graph without the cache


def test_a_tenant_whose_jurisdiction_the_topology_lacks_is_refused_before_start(tmp_path):
    """`jurisdiction: ZZ` would fall to the topology's permissive default; refuse to start."""
    tenants = {"acme": {"jurisdiction": "DE", "models": ["smollm2-135m-instruct"]},
               "typo": {"jurisdiction": "ZZ", "models": ["smollm2-135m-instruct"]}}
    path = region_file(tmp_path, topology=str(PROJECT_ROOT / "cluster_configs" / "regions.yaml"), tenants=tenants)
    code, lines = serve(path)
    assert code == 2 and len(lines) == 1, lines
    assert "tenants.typo.jurisdiction: 'ZZ' is neither a jurisdiction nor a country" in lines[0]
    tenants["typo"]["jurisdiction"] = "EU"
    from embassy.settings import load_settings
    preflight.check_tenants(load_settings(region_file(tmp_path, topology=str(PROJECT_ROOT / "cluster_configs" /
                                                                            "regions.yaml"), tenants=tenants),
                                          environ={}), path)
