"""The typed settings model: defaults, overrides and errors that name the file and field."""

from __future__ import annotations

import pytest

from embassy.errors import ConfigError
from embassy.settings import load_settings
from tests.conftest import LOCAL_CONFIG


def write(tmp_path, text: str):
    path = tmp_path / "region.yaml"
    path.write_text(text)
    return path


def test_shipped_local_config_is_valid():
    settings = load_settings(LOCAL_CONFIG, environ={})
    assert settings.region == "eu"
    assert settings.graph.llm.serve_options()["ray_actor_options"]["num_cpus"] == 1.0
    assert settings.tenants["dev"].models == ["smollm2-135m-instruct"]


def test_environment_overrides_nested_fields():
    settings = load_settings(LOCAL_CONFIG, environ={"EMBASSY__PORT": "8123",
                                                    "EMBASSY__GRAPH__LLM__MAX_REPLICAS": "3",
                                                    "EMBASSY__REQUESTS__TIMEOUT_S": "2.5"})
    assert settings.port == 8123
    assert settings.graph.llm.max_replicas == 3
    assert settings.requests.timeout_s == 2.5
    assert settings.graph.llm.min_replicas == 1  # untouched siblings keep the file's values


def test_autoscaling_options_when_min_and_max_differ():
    settings = load_settings(LOCAL_CONFIG, environ={"EMBASSY__GRAPH__LLM__MAX_REPLICAS": "2"})
    opts = settings.graph.llm.serve_options()
    assert "num_replicas" not in opts
    assert opts["autoscaling_config"]["max_replicas"] == 2
    assert opts["autoscaling_config"]["target_ongoing_requests"] == 16


def test_bad_value_names_file_and_field(tmp_path):
    path = write(tmp_path, "region: eu\nmodels: [m]\ngraph:\n  llm:\n    max_replicas: 0\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={})
    assert f"{path}: graph.llm.max_replicas:" in str(err.value)


def test_bad_override_names_the_override(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(LOCAL_CONFIG, environ={"EMBASSY__PORT": "not-a-port"})
    assert "EMBASSY__ overrides" in str(err.value) and "port:" in str(err.value)


def test_unknown_field_is_rejected(tmp_path):
    path = write(tmp_path, "region: eu\nmodels: [m]\nrequets: {}\n")
    with pytest.raises(ConfigError, match="requets"):
        load_settings(path, environ={})


def test_min_replicas_above_max_is_rejected(tmp_path):
    path = write(tmp_path, "region: eu\nmodels: [m]\ngraph:\n  cache: {min_replicas: 3, max_replicas: 1}\n")
    with pytest.raises(ConfigError, match="graph.cache"):
        load_settings(path, environ={})


def test_tenant_may_only_name_served_models(tmp_path):
    path = write(tmp_path, "region: eu\nmodels: [m]\ntenants:\n  t: {jurisdiction: EU, models: [other]}\n")
    with pytest.raises(ConfigError, match="other"):
        load_settings(path, environ={})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.yaml", environ={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "region: [unclosed\n"), environ={})


def test_engine_overrides_only_for_served_models(tmp_path):
    path = write(tmp_path, "region: eu\nmodels: [m]\nengine_overrides:\n  other: {stream_interval: 4}\n")
    with pytest.raises(ConfigError, match="engine_overrides"):
        load_settings(path, environ={})
