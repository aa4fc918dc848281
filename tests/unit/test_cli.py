"""The `embassy` command's offline subcommands."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from embassy.cli import app
from embassy.tenants import hash_key

runner = CliRunner()


def config(tmp_path):
    path = tmp_path / "region.yaml"
    path.write_text(yaml.safe_dump({
        "region": "eu", "models": ["smollm2-135m-instruct"], "state_dir": str(tmp_path / "state"),
        "model_store": str(tmp_path / "store"),
        "tenants": {"acme": {"jurisdiction": "EU", "models": ["smollm2-135m-instruct"]}}}))
    return path


def test_keys_create_prints_a_key_once_and_stores_its_hash(tmp_path):
    result = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--config", str(config(tmp_path))])
    assert result.exit_code == 0
    key = result.stdout.strip()
    stored = (tmp_path / "state" / "keys.yaml").read_text()
    assert key.startswith("emb-") and key not in stored and hash_key(key) in stored


def test_keys_create_for_an_unknown_tenant_fails(tmp_path):
    result = runner.invoke(app, ["keys", "create", "--tenant", "nobody", "--config", str(config(tmp_path))])
    assert result.exit_code == 2 and "nobody" in result.output


def test_invalid_config_exits_2_naming_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("region: eu\nmodels: []\n")
    result = runner.invoke(app, ["models", "list", "--config", str(bad)])
    assert result.exit_code == 2 and "models" in result.output


def test_models_list_reports_an_unprepared_store(tmp_path):
    result = runner.invoke(app, ["models", "list", "--json", "--config", str(config(tmp_path))])
    assert result.exit_code == 0
    rows = {r["id"]: r for r in json.loads(result.stdout)}
    assert rows["smollm2-135m-instruct"]["served"] is True
    assert rows["smollm2-135m-instruct"]["prepared"] is False


def test_status_and_stop_when_nothing_runs(tmp_path):
    path = str(config(tmp_path))
    assert runner.invoke(app, ["status", "--config", path]).exit_code == 1
    stop = runner.invoke(app, ["stop", "--config", path])
    assert stop.exit_code == 0 and "not running" in stop.output


def test_serve_refuses_a_region_other_than_the_configs(tmp_path):
    result = runner.invoke(app, ["serve", "--region", "us", "--config", str(config(tmp_path))])
    assert result.exit_code == 2 and "region" in result.output


def test_eval_cache_refuses_a_malformed_pairs_file_before_starting_anything(tmp_path):
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"text_a": "a", "text_b": "b", "label": 1}\nnot json\n')
    result = runner.invoke(app, ["eval", "cache", "--pairs", str(bad), "--config", str(config(tmp_path))])
    assert result.exit_code == 2 and "pairs.jsonl:2" in result.output
    bad.write_text('{"text_a": "a", "label": 1}\n')
    result = runner.invoke(app, ["eval", "cache", "--pairs", str(bad), "--config", str(config(tmp_path))])
    assert result.exit_code == 2 and "needs text_a, text_b and label" in result.output
    result = runner.invoke(app, ["eval", "cache", "--pairs", str(bad), "--part", "dev", "--config",
                                 str(config(tmp_path))])
    assert result.exit_code == 2 and "--part: 'dev' is not one of train, calibrate, test" in result.output


def test_train_refuses_a_missing_data_file(tmp_path):
    result = runner.invoke(app, ["train", "injection", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "none.jsonl" in result.output
