"""The regional application: Ingress -> Guardrail -> SemanticCache -> Retriever -> LLM.

    serve run graphs.regional:app config=cluster_configs/local.yaml

`app` is the builder itself, which `serve run` and Serve config files (`import_path` plus
`args`) both accept. The only place that calls `serve.deployment(...)` and `.bind(...)`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve import Application

from deployments.cache.deployment import CacheDeployment
from deployments.guardrail.deployment import GuardrailDeployment
from deployments.ingress.deployment import IngressDeployment
from deployments.llm.deployment import LLMDeployment
from deployments.retriever.deployment import RetrieverDeployment
from embassy.settings import EmbassySettings, load_settings


class RegionalAppArgs(BaseModel):
    """`args` of the builder: a region file, read with the process's `EMBASSY__*` overrides."""

    model_config = ConfigDict(extra="forbid")
    config: Path


def llm_deployment_name(model_id: str) -> str:
    return f"LLM:{model_id}"


def build_regional_app(args: dict | RegionalAppArgs) -> Application:
    parsed = args if isinstance(args, RegionalAppArgs) else RegionalAppArgs.model_validate(args)
    settings = load_settings(parsed.config)
    return build_from_settings(settings)


def build_from_settings(settings: EmbassySettings) -> Application:
    graph = settings.graph
    raw = settings.model_dump(mode="json")

    def node(cls, name: str, opts):
        return serve.deployment(cls, name=name).options(**opts.serve_options())

    # The guard's policies also ride in user_config, so changing them reconfigures the
    # running replicas instead of restarting them.
    guardrail = serve.deployment(GuardrailDeployment, name="Guardrail").options(
        **graph.guardrail.serve_options(),
        user_config={"guardrail": raw["guardrail"], "tenants": raw["tenants"]}).bind(raw)
    cache = node(CacheDeployment, "SemanticCache", graph.cache).bind(raw)
    retriever = node(RetrieverDeployment, "Retriever", graph.retriever).bind(raw)
    llms = {m: node(LLMDeployment, llm_deployment_name(m), graph.llm).bind(raw, m) for m in settings.models}
    return node(IngressDeployment, "Ingress", graph.ingress).bind(raw, guardrail, cache, retriever, llms)


app = build_regional_app
