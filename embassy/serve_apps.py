"""The Serve applications of one region, as a declarative config's `applications` list:
the region's own (ingress, guard, cache, retriever) and one per deployed model version.
`embassy serve`/`apply`/`models` (through embassy/serve_driver.py) and the rendered
serve.yaml and RayService use the same list."""

from __future__ import annotations

from typing import Any

from embassy.model_routes import ModelRoute
from embassy.settings import EmbassySettings
from graphs.names import llm_app_name

# Here rather than in graphs/regional.py: the short-lived deploy driver needs them, and
# importing the deployments (the guard's ONNX models, the engine) took it minutes on a
# loaded 2-core host.


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


def applications(app_name: str, settings_path: str, routes: dict[str, ModelRoute],
                 guard_user_config: dict[str, Any] | None = None,
                 runtime_env: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    import copy

    def extra() -> dict[str, Any]:  # a copy per app: no YAML anchors in rendered files
        return {"runtime_env": copy.deepcopy(runtime_env)} if runtime_env else {}
    deployments: list[dict[str, Any]] = [
        {"name": "Ingress", "user_config": {"routes": {m: r.model_dump(mode="json") for m, r in routes.items()}}}]
    if guard_user_config is not None:
        deployments.append({"name": "Guardrail", "user_config": guard_user_config})
    apps = [{"name": app_name, "route_prefix": "/", "import_path": "graphs.regional:app",
             "args": {"config": settings_path}, "deployments": deployments, **extra()}]
    for model, route in routes.items():
        for version in route.deployed():
            apps.append({"name": llm_app_name(app_name, model, version), "route_prefix": None,
                         "import_path": "graphs.regional:llm_app",
                         "args": {"config": settings_path, "model": model, "version": version}, **extra()})
    return apps
