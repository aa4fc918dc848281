"""Per-region deployment files rendered from the topology.

For region R, `render_region(topology, R)` gives:
- `settings.yaml`: the region's Embassy settings (the base config with the region's
  models, Redis, vector store, autoscaling and tenants; it points back at the topology so
  the ingress can enforce residency);
- `serve.yaml`: a Serve config for `serve deploy` (the regional app, args -> settings);
- `ray-cluster.yaml`: a Ray cluster launcher file (on-premises `local` provider: fill in
  the host addresses) that starts Ray and deploys the Serve config;
- `rayservice.yaml`: a KubeRay `RayService` with the settings and topology in a ConfigMap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from embassy.settings import PROJECT_ROOT, EmbassySettings, _merge
from embassy.topology import Topology

IMAGE = "embassy:0.1.0"  # built from this repository (`make install` inside the image)
K8S_CONFIG_DIR = "/etc/embassy"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
               "DO_NOT_TRACK": "1", "RAY_USAGE_STATS_ENABLED": "0"}


def region_settings(topology: Topology, region: str, topology_path: Path) -> dict[str, Any]:
    """The region's settings as a plain dict, validated."""
    spec = topology.regions[region]
    base_path = topology.base_config if topology.base_config.is_absolute() else PROJECT_ROOT / topology.base_config
    base = yaml.safe_load(base_path.read_text()) or {}
    url = urlparse(spec.endpoint)
    over: dict[str, Any] = {
        "region": region,
        "models": list(spec.models),
        "tenants": {name: t.model_dump(mode="json", exclude={"residency"}, exclude_defaults=True)
                    for name, t in topology.tenants.items()},
        "cache": {"redis_url": spec.redis_url},
        "retriever": dict(spec.vector_store),
        "graph": {node: s.model_dump(mode="json", exclude_unset=True) for node, s in spec.autoscaling.items()},
        "topology": str(topology_path),
        "public_endpoint": spec.endpoint,
        # Production: no answer without its audit record.
        "audit": {"fail_closed": True},
    }
    if url.port:
        over["port"] = url.port
    data = _merge(_merge(base, over), spec.settings)
    if not data.get("tenants"):
        data.pop("tenants", None)
    EmbassySettings.model_validate(data)  # raises on anything the region cannot run with
    return data


def serve_config(region: str, settings_path: str, port: int, settings: dict[str, Any]) -> dict[str, Any]:
    """The region's applications (embassy/serve_apps.py), each model on its default version."""
    from embassy.model_routes import initial_routes
    from embassy.serve_apps import applications

    routes = initial_routes(EmbassySettings.model_validate(settings))
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": port},
        "applications": applications(f"embassy-{region}", settings_path, routes,
                                     runtime_env={"env_vars": dict(OFFLINE_ENV)}),
    }


RAY_AUTH = "RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=/etc/embassy/ray-auth-token"


def ray_cluster(region: str, serve_path: str) -> dict[str, Any]:
    """Ray's cluster launcher format, on-premises (`local` provider)."""
    return {
        "cluster_name": f"embassy-{region}",
        "max_workers": 8,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        "provider": {"type": "local", "head_ip": f"HEAD-HOST-OF-{region.upper()}",
                     "worker_ips": []},
        "auth": {"ssh_user": "embassy"},
        "file_mounts": {"/opt/embassy/cluster_configs": "cluster_configs"},
        "setup_commands": ["cd /opt/embassy && make install"],
        # Token auth on every node (Ray >= 2.52): without it the GCS and the Jobs API run any
        # code for anyone who reaches them. The token file is the operator's secret, put on
        # each host before `ray up` (`ray get-auth-token --generate` makes one).
        "head_start_ray_commands": [
            "ray stop",
            f"{RAY_AUTH} ray start --head --port=6379 --dashboard-host=127.0.0.1 --disable-usage-stats",
            f"cd /opt/embassy && {RAY_AUTH} .venv/bin/serve deploy {serve_path}",
        ],
        "worker_start_ray_commands": ["ray stop",
                                      f"{RAY_AUTH} ray start --address=$RAY_HEAD_IP:6379 --disable-usage-stats"],
    }


def ray_service(region: str, serve: dict[str, Any], settings: dict[str, Any], topology_text: str,
                namespace: str = "embassy") -> list[dict[str, Any]]:
    """A ConfigMap with the region's files and a KubeRay RayService that mounts it."""
    name = f"embassy-{region}"
    apps = [{**app, "args": {**app["args"], "config": f"{K8S_CONFIG_DIR}/settings.yaml"}}
            for app in serve["applications"]]
    k8s_settings = {**settings, "topology": f"{K8S_CONFIG_DIR}/regions.yaml"}
    volume = {"name": "embassy-config", "configMap": {"name": f"{name}-config"}}
    mount = {"name": "embassy-config", "mountPath": K8S_CONFIG_DIR, "readOnly": True}
    env = [{"name": k, "value": v} for k, v in OFFLINE_ENV.items()]

    def container(kind: str, cpu: str, memory: str) -> dict[str, Any]:
        return {"name": f"ray-{kind}", "image": IMAGE, "env": env, "volumeMounts": [mount],
                "resources": {"requests": {"cpu": cpu, "memory": memory},
                              "limits": {"cpu": cpu, "memory": memory}}}

    head = container("head", "2", "8Gi")
    head["ports"] = [{"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"},
                     {"containerPort": 8000, "name": "serve"}]
    # The dashboard listens on the pod network because the KubeRay operator deploys Serve
    # through it; token auth (authOptions) guards it, and the NetworkPolicy below lets only
    # the operator and the cluster's own pods reach anything but the Serve port.
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": f"{name}-internal", "namespace": namespace,
                           "labels": {"app.kubernetes.io/part-of": "embassy", "embassy/region": region}},
              "spec": {"podSelector": {"matchLabels": {"ray.io/cluster": name}},
                       "policyTypes": ["Ingress"],
                       "ingress": [
                           {"ports": [{"port": 8000, "protocol": "TCP"}]},
                           {"from": [{"podSelector": {"matchLabels": {"ray.io/cluster": name}}},
                                     {"namespaceSelector": {},
                                      "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}}}]},
                       ]}}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": f"{name}-config", "namespace": namespace,
                               "labels": {"app.kubernetes.io/part-of": "embassy", "embassy/region": region}},
                  "data": {"settings.yaml": yaml.safe_dump(k8s_settings, sort_keys=False),
                           "regions.yaml": topology_text}}
    service = {
        "apiVersion": "ray.io/v1", "kind": "RayService",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "embassy", "embassy/region": region}},
        "spec": {
            "serveConfigV2": yaml.safe_dump({"applications": apps}, sort_keys=False),
            "rayClusterConfig": {
                "rayVersion": "2.60.0",
                "authOptions": {"mode": "token"},  # KubeRay >= 1.5.1 makes the token Secret
                "headGroupSpec": {"rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                                  "template": {"spec": {"containers": [head], "volumes": [volume]}}},
                "workerGroupSpecs": [{
                    "groupName": "cpu-workers", "replicas": 1, "minReplicas": 1, "maxReplicas": 8,
                    "rayStartParams": {},
                    "template": {"spec": {"containers": [container("worker", "4", "16Gi")], "volumes": [volume]}},
                }],
            },
        },
    }
    return [config_map, service, policy]


def _project_relative(path: Path) -> str:
    """Paths inside the project are written relative to it (Ray's working directory)."""
    resolved = path.resolve()
    return str(resolved.relative_to(PROJECT_ROOT)) if resolved.is_relative_to(PROJECT_ROOT) else str(resolved)


def render_region(topology: Topology, region: str, topology_path: Path, out_dir: Path) -> dict[str, Path]:
    """Write the region's four files into `out_dir`; returns them by kind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = region_settings(topology, region, Path(_project_relative(topology_path)))
    files = {"settings": out_dir / "settings.yaml", "serve": out_dir / "serve.yaml",
             "ray_cluster": out_dir / "ray-cluster.yaml", "rayservice": out_dir / "rayservice.yaml"}
    serve = serve_config(region, _project_relative(files["settings"]), int(settings.get("port", 8000)), settings)
    header = f"# Rendered from {_project_relative(topology_path)} by `embassy config render --region {region}`; do not edit.\n"
    files["settings"].write_text(header + yaml.safe_dump(settings, sort_keys=False))
    files["serve"].write_text(header + yaml.safe_dump(serve, sort_keys=False))
    files["ray_cluster"].write_text(header + yaml.safe_dump(ray_cluster(region, _project_relative(files["serve"])), sort_keys=False))
    files["rayservice"].write_text(header + yaml.safe_dump_all(
        ray_service(region, serve, settings, topology_path.read_text()), sort_keys=False))
    return files
