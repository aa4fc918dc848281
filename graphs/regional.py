"""The regional application: Ingress -> Guardrail -> SemanticCache -> Retriever -> LLM.

    serve run graphs.regional:app config=cluster_configs/local.yaml

`app` is the builder itself, which `serve run` and Serve config files (`import_path` plus
`args`) both accept. The only place that calls `serve.deployment(...)` and `.bind(...)`.

Each model version is an application of its own (`llm_app`, named by `llm_app_name`), which
the ingress reaches by name: deploying a version, moving traffic to it and retiring the old
one (`embassy models deploy`) then adds and removes applications and changes the ingress's
`user_config`, and never the region application's arguments, which would restart the
ingress and drop the requests it holds.
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
from embassy.serve_apps import live_guard_config, static_settings
from graphs.names import LLM_DEPLOYMENT


class RegionalAppArgs(BaseModel):
    """`args` of the builder: a region file, read with the process's `EMBASSY__*` overrides."""

    model_config = ConfigDict(extra="forbid")
    config: Path


class LLMAppArgs(BaseModel):
    """`args` of `llm_app`: the region file, and which model version to serve."""

    model_config = ConfigDict(extra="forbid")
    config: Path
    model: str
    version: str


def build_regional_app(args: dict | RegionalAppArgs) -> Application:
    parsed = args if isinstance(args, RegionalAppArgs) else RegionalAppArgs.model_validate(args)
    settings = load_settings(parsed.config)
    return build_from_settings(settings)


def build_from_settings(settings: EmbassySettings) -> Application:
    graph = settings.graph
    raw = static_settings(settings.model_dump(mode="json"))
    live = live_guard_config(settings)

    def node(cls, name: str, opts):
        return serve.deployment(cls, name=name).options(**opts.serve_options())

    # The guard's policies also ride in user_config, so changing them reconfigures the
    # running replicas instead of restarting them.
    guardrail = serve.deployment(GuardrailDeployment, name="Guardrail").options(
        **graph.guardrail.serve_options(),
        user_config=live).bind(raw)
    cache = node(CacheDeployment, "SemanticCache", graph.cache).bind(raw)
    retriever = node(RetrieverDeployment, "Retriever", graph.retriever).bind(raw)
    return node(IngressDeployment, "Ingress", graph.ingress).bind(raw, guardrail, cache, retriever)


def build_llm_app(args: dict | LLMAppArgs) -> Application:
    parsed = args if isinstance(args, LLMAppArgs) else LLMAppArgs.model_validate(args)
    settings = load_settings(parsed.config)
    raw = static_settings(settings.model_dump(mode="json"))
    # A retired version's replicas finish their streams before they stop.
    return serve.deployment(LLMDeployment, name=LLM_DEPLOYMENT).options(
        **settings.graph.llm.serve_options(),
        graceful_shutdown_timeout_s=settings.rollout.drain_s).bind(raw, parsed.model, parsed.version)


app = build_regional_app
llm_app = build_llm_app
