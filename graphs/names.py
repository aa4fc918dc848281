"""Names of the Serve applications a region runs (kept apart from the builders so that the
ingress can find a model version's application without importing every deployment)."""

from __future__ import annotations

LLM_DEPLOYMENT = "LLM"


def llm_app_name(region_app: str, model_id: str, version: str) -> str:
    """The Serve application of one model version, beside the region's own."""
    return f"{region_app}.llm.{model_id}.{version}"
