"""The Serve applications of one region, as a declarative config's `applications` list:
the region's own (ingress, guard, cache, retriever) and one per deployed model version.
`embassy serve`/`apply`/`models` (through embassy/serve_driver.py) and the rendered
serve.yaml and RayService use the same list."""

from __future__ import annotations

from typing import Any

from embassy.model_routes import ModelRoute
from graphs.names import llm_app_name


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
