"""Two regions on one machine: EU and US each with its own Ray cluster, Redis and vector
store, behind the geo-DNS front. EU requests carrying canaries are served in EU and leave
nothing in US; an EU-subject request sent to US gets 421; with EU stopped, 503 from US."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import redis
import yaml
from typer.testing import CliRunner

from embassy import stack
from embassy.cli import app
from embassy.geodns import build_geoip_db, probe_down, resolve, start_geodns
from embassy.settings import load_settings
from embassy.tenants import create_key
from embassy.topology import load_topology
from tests.conftest import DEFAULT_MODEL
from tests.integration.conftest import stop_session_stack

pytestmark = pytest.mark.e2e
# Plain words, not identifiers: the guard would redact an ID-like canary before anything kept it.
CANARY_PROMPT = "quokkacanaryprompt"
CANARY_DOC = "wombatcanarydocument"
SUBNETS = {"10.1.0.0/16": "DE", "10.2.0.0/16": "US", "10.6.0.0/16": "GB"}


def _topology(tmp: Path, ports: dict[str, int]) -> Path:
    path = tmp / "regions.yaml"
    path.write_text(yaml.safe_dump({
        "base_config": str(tmp / "unused.yaml"),
        "regions": {
            "eu": {"endpoint": f"http://127.0.0.1:{ports['eu']}", "address": "127.0.1.1", "failover": "us",
                   "countries": ["DE", "FR", "GB"], "models": [DEFAULT_MODEL]},
            "us": {"endpoint": f"http://127.0.0.1:{ports['us']}", "address": "127.0.2.1",
                   "countries": ["US"], "models": [DEFAULT_MODEL]}},
        "jurisdictions": {"EU": {"members": ["DE", "FR"], "process": ["eu"]},
                          "US": {"process": ["us", "eu"], "store": ["us"]}},
        "default_residency": {"process": "*"},
        "dns": {"zone": "api.embassy.test", "subnets": SUBNETS}}))
    return path


def _region_config(tmp: Path, region: str, port: int, topology: Path, model_store: Path) -> Path:
    path = tmp / f"{region}.yaml"
    path.write_text(yaml.safe_dump({
        "region": region, "host": "127.0.0.1", "port": port, "state_dir": str(tmp / region),
        "model_store": str(model_store), "models": [DEFAULT_MODEL], "dev_tenant": None, "topology": str(topology),
        "tenants": {"eu-co": {"jurisdiction": "EU", "models": [DEFAULT_MODEL]},
                    "us-co": {"jurisdiction": "US", "models": [DEFAULT_MODEL]}},
        "cluster": {"num_cpus": 4, "object_store_mb": 256, "pin_services_to_reserved_cpu": True},
        "requests": {"timeout_s": 90, "max_completion_tokens_default": 24},
        # Every topic: the canaries are not customs questions.
        "guardrail": {"topics_file": None}}))
    return path


@pytest.fixture(scope="module")
def regions(prepared_model, tmp_path_factory):
    stop_session_stack()  # the machine to these two regions alone (see stop_session_stack)
    tmp = tmp_path_factory.mktemp("regions")
    ports = {"eu": stack.free_port(), "us": stack.free_port()}
    topology = _topology(tmp, ports)
    configs = {r: _region_config(tmp, r, ports[r], topology, prepared_model[1].parent) for r in ports}
    settings = {r: load_settings(c, environ={}) for r, c in configs.items()}
    states = {}
    try:
        for r in ("eu", "us"):
            states[r] = stack.start_stack(settings[r], configs[r], progress=lambda m, r=r: print(f"[{r}] {m}"))
        keys = {r: {t: create_key(settings[r].keys_path, t) for t in ("eu-co", "us-co")} for r in ports}
        yield {"tmp": tmp, "topology": topology, "configs": configs, "settings": settings, "states": states,
               "keys": keys, "url": {r: s.url for r, s in states.items()}}
    finally:
        for r in states:
            stack.stop_stack(settings[r])


def chat(regions, region: str, tenant: str, text: str, **headers) -> httpx.Response:
    body = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 16,
            "temperature": 0}
    return httpx.post(f"{regions['url'][region]}/v1/chat/completions", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {regions['keys'][region][tenant]}", **headers})


def _bytes_under(*folders: Path) -> bytes:
    out = b""
    for folder in folders:
        for p in Path(folder).rglob("*"):
            if p.is_file() and not p.is_symlink():
                try:
                    out += p.read_bytes()
                except OSError:
                    pass
    return out


def _redis_bytes(url: str) -> bytes:
    client = redis.Redis.from_url(url)
    out = b""
    for key in client.scan_iter("*"):
        out += key
        if client.type(key) == b"hash":
            out += b"".join(k + v for k, v in client.hgetall(key).items())
        elif client.type(key) == b"string":
            out += client.get(key) or b""
    return out


def test_dns_sends_each_client_to_its_region(regions, tmp_path):
    topo = load_topology(regions["topology"])
    db = build_geoip_db(SUBNETS, tmp_path / "geo.mmdb")
    port = stack.free_port()
    dns = start_geodns(topo, tmp_path / "pdns", port, db, probe_down(topo))
    try:
        assert resolve(topo.dns.zone, "127.0.0.1", port, "10.1.3.0/24") == ["127.0.1.1"]  # Germany -> EU
        assert resolve(topo.dns.zone, "127.0.0.1", port, "10.2.3.0/24") == ["127.0.2.1"]  # US -> US
    finally:
        dns.stop()


def test_eu_data_stays_in_eu(regions):
    doc = regions["tmp"] / "eu_shipment.md"
    doc.write_text(f"# Shipment record\nShipment {CANARY_DOC} waits in Hamburg for an ATLAS release.\n")
    ingest = CliRunner().invoke(app, ["ingest", str(doc), "-t", "eu-co", "-c", str(regions["configs"]["eu"])])
    assert ingest.exit_code == 0, ingest.output
    eu_state, us_state = regions["states"]["eu"], regions["states"]["us"]
    # Until EU's Redis holds one (a loaded machine may make Redis miss its 50 ms deadline,
    # and then the cache is bypassed for a moment): the scans must be able to see a canary.
    for i in range(10):
        r = chat(regions, "eu", "eu-co", f"Where does shipment {CANARY_DOC} wait? Reference {CANARY_PROMPT} {i}")
        assert r.status_code == 200, r.text
        assert r.json()["embassy"]["region"] == "eu"
        time.sleep(1)
        if CANARY_PROMPT.encode() in _redis_bytes(eu_state.redis_url):
            break
    # Sent to the wrong region: refused before a byte of the body is read, and named where to go.
    wrong = chat(regions, "us", "eu-co", f"Status of {CANARY_PROMPT} misdirected?")
    assert wrong.status_code == 421, wrong.text
    assert wrong.json()["error"]["code"] == "misdirected_request"
    assert wrong.headers["x-embassy-region-endpoint"] == regions["url"]["eu"]
    # The scans can see a canary where it is: EU's Redis holds the redacted question.
    assert CANARY_PROMPT.encode() in _redis_bytes(eu_state.redis_url)
    assert CANARY_DOC.encode() in _bytes_under(regions["settings"]["eu"].vectors_path)
    us = regions["settings"]["us"]
    us_bytes = _redis_bytes(us_state.redis_url) + _bytes_under(us.resolve(us.state_dir), us_state.temp_dir)
    for canary in (CANARY_PROMPT, CANARY_DOC):
        assert canary.encode() not in us_bytes, canary


def test_us_subjects_may_be_processed_in_eu_but_are_not_kept_there(regions):
    r = chat(regions, "eu", "us-co", "What is the ISF 10+2 filing deadline?")
    assert r.status_code == 200 and r.json()["embassy"]["region"] == "eu"
    again = chat(regions, "eu", "us-co", "What is the ISF 10+2 filing deadline?")
    assert again.json()["embassy"]["cache"]["status"] != "hit"  # US data is stored only in US


def test_zz_with_eu_down_eu_subjects_fail_closed_in_us(regions):
    stack.stop_stack(regions["settings"]["eu"])
    regions["states"].pop("eu")
    r = chat(regions, "us", "eu-co", "Where is my shipment?")
    assert r.status_code == 503, r.text
    assert "not served elsewhere" in r.json()["error"]["message"]
    ok = chat(regions, "us", "us-co", "What is the ISF 10+2 filing deadline?")
    assert ok.status_code == 200 and ok.json()["embassy"]["region"] == "us"
