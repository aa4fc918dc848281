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


LIVE_GUARD_FIELDS = ("pii", "ner", "injection_threshold", "topics_file", "topics", "system_prompt",
                     "system_prompt_max_overlap")


def static_settings(raw: dict) -> dict:
    """The settings without the guard's live-tunable parts. Deployments are bound with this,
    so changing a guard policy changes no deployment's arguments (which would restart its
    replicas); the guardrail gets those parts as `user_config` instead."""
    out = {**raw, "guardrail": {k: v for k, v in raw["guardrail"].items() if k not in LIVE_GUARD_FIELDS}}
    out["tenants"] = {name: {k: v for k, v in t.items() if k != "pii"} for name, t in raw["tenants"].items()}
    return out


def guard_user_config(raw: dict) -> dict:
    return {"guardrail": {k: raw["guardrail"][k] for k in LIVE_GUARD_FIELDS},
            "tenant_pii": {name: t.get("pii", {}) for name, t in raw["tenants"].items()}}


def live_guard_config(settings: EmbassySettings) -> dict:
    """The guardrail's `user_config`. It carries the topics file's content, not its path,
    so that editing that file and applying the config reaches the running guard."""
    full = settings.model_dump(mode="json")
    full["guardrail"]["topics"] = settings.topic_settings().model_dump(mode="json")
    return guard_user_config(full)


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
