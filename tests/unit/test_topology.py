"""The multi-region topology: validation (every bad input named by file and field), the
residency policy, and the files rendered from it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from embassy.cli import app
from embassy.errors import ConfigError
from embassy.render import render_region
from embassy.settings import PROJECT_ROOT
from embassy.topology import load_topology

SHIPPED = PROJECT_ROOT / "cluster_configs" / "regions.yaml"
runner = CliRunner()


def test_the_shipped_topology_is_valid_and_says_where_data_may_go():
    t = load_topology(SHIPPED)
    assert {"eu", "us", "in", "sg", "ae"} <= set(t.regions)
    assert t.serving_order("DE") == ["eu"]  # EU subjects only in the EU, no fail-over abroad
    assert t.serving_order("AE") == ["ae"] and t.serving_order("SG") == ["sg"]
    assert t.serving_order("IN") == ["in", "sg", "ae"]  # anywhere not denied (us is)
    assert "us" not in t.allowed_regions("IN")
    assert t.serving_order("GB") == ["eu", "us"]  # default policy: anywhere
    assert t.residency("IN").allows("sg") and not t.residency("IN").allows("sg", "store")


def _write(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load(SHIPPED.read_text())
    mutate(data)
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_redis_off_loopback_needs_tls_and_auth():
    from embassy.topology import redis_url_problem

    assert "use rediss://" in redis_url_problem("redis://redis.eu.internal:6379")
    assert "needs AUTH" in redis_url_problem("rediss://redis.eu.internal:6380")
    assert redis_url_problem("rediss://embassy:s3cret@redis.eu.internal:6380") is None
    assert redis_url_problem("redis://127.0.0.1:6379") is None  # the stack's own, on loopback
    assert redis_url_problem("rediss://redis.eu.internal:6380", need_password=False) is None  # committed form


def test_the_cache_refuses_a_plaintext_redis_off_loopback():
    from deployments.cache.deployment import build_cache
    from embassy.settings import EmbassySettings

    settings = EmbassySettings.model_validate({"region": "eu", "models": ["smollm2-135m-instruct"],
                                               "cache": {"redis_url": "redis://10.0.0.5:6379"}})
    with pytest.raises(ConfigError, match="cache.redis_url: redis:// to 10.0.0.5 is unencrypted"):
        build_cache(settings)


@pytest.mark.parametrize("mutate,expected", [
    (lambda d: d["regions"]["us"].update(failover="mars"), "regions.us.failover: unknown region 'mars'"),
    (lambda d: d["regions"]["us"].update(failover="eu"), "regions.eu.failover: cycle eu -> us -> eu"),
    (lambda d: d["regions"]["eu"].pop("endpoint"), "regions.eu.endpoint: Field required"),
    (lambda d: d["regions"]["eu"].update(endpoint="eu.example"), "regions.eu.endpoint: not an http(s) URL"),
    (lambda d: d["regions"]["us"]["countries"].append("DE"), "regions.us.countries: DE already has home region"),
    (lambda d: d["jurisdictions"]["EU"]["members"].append("ZZ"), "jurisdictions.EU.members: country ZZ has no home"),
    (lambda d: d["jurisdictions"]["AE"].update(process=["ae", "atlantis"]),
     "jurisdictions.AE.process: unknown region 'atlantis'"),
    # A policy that sends data where it may not go: Emirati clients homed in the EU region.
    (lambda d: (d["regions"]["ae"]["countries"].remove("AE"), d["regions"]["eu"]["countries"].append("AE")),
     "regions.eu.countries: AE is a AE jurisdiction country, whose data may not be processed in 'eu'"),
    (lambda d: d["jurisdictions"]["IN"].update(store=["us"]),
     "jurisdictions.IN.store: stores data in a region where it may not be processed"),
    (lambda d: d["dns"].update(subnets={"10.1.0.0/16": "DE", "10.1.128.0/17": "US"}),
     "dns.subnets: 10.1.0.0/16 overlaps 10.1.128.0/17"),
    (lambda d: d["regions"]["eu"].update(redis_url="redis://redis.eu.internal:6379"),
     "regions.eu.redis_url: redis:// to redis.eu.internal is unencrypted"),
    (lambda d: d["tenants"].update(acme={"jurisdiction": "AE", "models": ["smollm2-135m-instruct"],
                                         "residency": {"process": ["nowhere"]}}),
     "tenants.acme.residency.process: unknown region 'nowhere'"),
])
def test_bad_topologies_are_reported_by_file_and_field(tmp_path, mutate, expected):
    path = _write(tmp_path, mutate)
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    assert f"{path}: {expected}" in str(info.value)
    result = runner.invoke(app, ["config", "validate", "--topology", str(path)])
    assert result.exit_code == 2 and expected.split(":")[0] in result.output


def test_serve_refuses_to_start_on_an_invalid_topology(tmp_path):
    bad = _write(tmp_path, lambda d: d["regions"]["us"].update(failover="eu"))
    config = tmp_path / "eu.yaml"
    config.write_text(yaml.safe_dump({"region": "eu", "models": ["smollm2-135m-instruct"], "topology": str(bad),
                                      "state_dir": str(tmp_path / "state")}))
    result = runner.invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 2 and "cycle" in result.output
    assert not (tmp_path / "state").exists()  # nothing was started


def test_rendered_files_are_what_serve_ray_and_kuberay_accept(tmp_path):
    from ray.serve.schema import ServeDeploySchema

    t = load_topology(SHIPPED)
    files = render_region(t, "in", SHIPPED, tmp_path)
    settings = yaml.safe_load(files["settings"].read_text())
    assert settings["region"] == "in" and settings["cache"]["redis_url"] == "rediss://redis.in.internal:6380"
    serve = yaml.safe_load(files["serve"].read_text())
    ServeDeploySchema.model_validate(serve)
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(yaml.safe_load(files["ray_cluster"].read_text()), schema)
    config_map, service, policy = list(yaml.safe_load_all(files["rayservice"].read_text()))
    assert config_map["kind"] == "ConfigMap" and service["kind"] == "RayService"
    # No unauthenticated Jobs API (remote code execution): token auth, the dashboard kept internal.
    assert service["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "token"}
    assert policy["kind"] == "NetworkPolicy" and policy["spec"]["podSelector"]["matchLabels"] == {
        "ray.io/cluster": "embassy-in"}
    open_rule = [r for r in policy["spec"]["ingress"] if "from" not in r]
    assert open_rule == [{"ports": [{"port": 8000, "protocol": "TCP"}]}]  # only Serve from anywhere
    launcher = yaml.safe_load(files["ray_cluster"].read_text())
    assert all("RAY_AUTH_MODE=token" in c for c in launcher["head_start_ray_commands"][1:]
               + launcher["worker_start_ray_commands"][1:])
    assert "--dashboard-host=127.0.0.1" in launcher["head_start_ray_commands"][1]
    assert service["apiVersion"] == "ray.io/v1"
    apps = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    ServeDeploySchema.model_validate({"applications": apps})
    assert apps[0]["args"]["config"] == "/etc/embassy/settings.yaml"
    assert yaml.safe_load(config_map["data"]["settings.yaml"])["region"] == "in"


@pytest.mark.parametrize("region", ["eu", "us", "in", "sg", "ae"])
def test_committed_region_files_match_the_topology(tmp_path, region):
    """cluster_configs/regions/<r>/ is rendered output; re-render after editing regions.yaml."""
    render_region(load_topology(SHIPPED), region, SHIPPED, tmp_path)
    committed = PROJECT_ROOT / "cluster_configs" / "regions" / region
    where = str(committed.relative_to(PROJECT_ROOT))
    for name in ("settings.yaml", "serve.yaml", "ray-cluster.yaml", "rayservice.yaml"):
        fresh = (tmp_path / name).read_text().replace(str(tmp_path), where)
        assert fresh == (committed / name).read_text(), name


def test_the_two_region_example_files_load():
    from embassy.settings import load_settings

    topo = load_topology(PROJECT_ROOT / "cluster_configs" / "two-regions-local.yaml")
    for region in ("eu", "us"):
        settings = load_settings(PROJECT_ROOT / "cluster_configs" / f"local-{region}.yaml", environ={})
        assert settings.region == region and settings.topology is not None
        assert topo.regions[region].endpoint.endswith(f":{settings.port}")
    assert topo.serving_order("DE") == ["eu"] and topo.serving_order("GB") == ["eu", "us"]
