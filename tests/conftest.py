"""Shared fixtures. Everything here runs offline."""

from __future__ import annotations

import os

# Nothing leaves the machine, in the test process or anything it starts.
for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
               "DO_NOT_TRACK": "1", "RAY_USAGE_STATS_ENABLED": "0"}.items():
    os.environ.setdefault(_k, _v)

import pytest

from embassy.settings import PROJECT_ROOT, load_settings
from models.prepare import prepare_model
from models.registry import load_registry

LOCAL_CONFIG = PROJECT_ROOT / "cluster_configs" / "local.yaml"
DEFAULT_MODEL = "smollm2-135m-instruct"
TEST_MANIFESTS = PROJECT_ROOT / "tests" / "data" / "manifests"  # extra versions (its README)


@pytest.fixture(scope="session")
def prepared_model():
    """The default model in the project's model store (converted once, then verified)."""
    settings = load_settings(LOCAL_CONFIG, environ={})
    manifest = load_registry()[DEFAULT_MODEL]
    return manifest, prepare_model(manifest, settings.resolve(settings.model_store)).path
