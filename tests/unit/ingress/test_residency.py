"""Residency at the ingress, against the deterministic fake graph: 421 to a region that may
process the data, 503 when none is up, nothing of a refused request processed or kept; a
region that may process but not store keeps no cache entry; erasure."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from fastapi.testclient import TestClient

from deployments.ingress.app import create_app
from deployments.ingress.core import ChatService
from embassy.settings import PROJECT_ROOT, EmbassySettings
from embassy.stack import free_port
from embassy.tenants import KeyStore, create_key
from tests.unit.ingress.test_app import MODEL, FakeGraphNodes, assert_error, chat


class _Ready(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200 if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def peer():
    """A region that is up: something on loopback answering /readyz with 200."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def topology_file(tmp_path, endpoints: dict[str, str]):
    data = yaml.safe_load((PROJECT_ROOT / "cluster_configs" / "regions.yaml").read_text())
    for region, url in endpoints.items():
        data["regions"][region]["endpoint"] = url
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def service_in(region: str, tmp_path, topology):
    settings = EmbassySettings.model_validate({
        "region": region, "models": [MODEL], "keys_file": str(tmp_path / "keys.yaml"), "topology": str(topology),
        "state_dir": str(tmp_path),
        "tenants": {"eu-co": {"jurisdiction": "EU", "models": [MODEL]},
                    "in-co": {"jurisdiction": "IN", "models": [MODEL]},
                    "broker": {"jurisdiction": "US", "models": [MODEL], "subject_header": True}}})
    nodes = FakeGraphNodes()
    service = ChatService(settings, KeyStore.from_settings(settings), nodes, {MODEL: 100})

    async def readiness():
        return nodes.readiness()
    client = TestClient(create_app(service, readiness))
    keys = {t: {"Authorization": f"Bearer {create_key(settings.keys_path, t)}"} for t in settings.tenants}
    return client, nodes, keys, settings


def test_a_region_that_may_not_process_answers_421_naming_one_that_may(tmp_path, peer):
    client, nodes, keys, _ = service_in("us", tmp_path, topology_file(tmp_path, {"eu": peer}))
    r = client.post("/v1/chat/completions", json=chat(), headers=keys["eu-co"])
    err = assert_error(r, 421, "misdirected_request")
    assert peer in err["message"] and r.headers["x-embassy-region-endpoint"] == peer
    assert nodes.seen == [] and nodes.cached == {}  # nothing processed, nothing kept


def test_when_every_allowed_region_is_down_the_request_fails_closed(tmp_path):
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens: EU is down
    client, nodes, keys, _ = service_in("us", tmp_path, topology_file(tmp_path, {"eu": nowhere}))
    r = client.post("/v1/chat/completions", json=chat(), headers=keys["eu-co"])
    assert_error(r, 503, "service_unavailable")
    assert nodes.seen == []


def test_an_allowed_jurisdiction_is_served(tmp_path):
    client, nodes, keys, _ = service_in("eu", tmp_path, topology_file(tmp_path, {}))
    r = client.post("/v1/chat/completions", json=chat(temperature=0), headers=keys["eu-co"])
    assert r.status_code == 200 and len(nodes.seen) == 1
    assert nodes.seen[0].ctx.jurisdiction == "EU"


def test_processed_but_not_stored_where_the_policy_says_so(tmp_path):
    """Indian data may be processed in Singapore but stored only in India: served, not cached."""
    client, nodes, keys, _ = service_in("sg", tmp_path, topology_file(tmp_path, {}))
    r = client.post("/v1/chat/completions", json=chat(temperature=0), headers=keys["in-co"])
    assert r.status_code == 200 and nodes.seen
    client.post("/v1/chat/completions", json=chat(temperature=0), headers=keys["in-co"])
    assert nodes.cached == {} and len(nodes.seen) == 2


def test_subject_jurisdiction_header_only_for_tenants_allowed_to_send_it(tmp_path, peer):
    client, nodes, keys, _ = service_in("us", tmp_path, topology_file(tmp_path, {"ae": peer}))
    denied = client.post("/v1/chat/completions", json=chat(), headers={**keys["eu-co"], "x-embassy-data-subject": "US"})
    assert_error(denied, 400, param="x-embassy-data-subject")
    bad = client.post("/v1/chat/completions", json=chat(), headers={**keys["broker"], "x-embassy-data-subject": "uae"})
    assert_error(bad, 400, param="x-embassy-data-subject")
    emirati = client.post("/v1/chat/completions", json=chat(), headers={**keys["broker"], "x-embassy-data-subject": "AE"})
    assert_error(emirati, 421) and emirati.headers["x-embassy-region-endpoint"] == peer
    own = client.post("/v1/chat/completions", json=chat(), headers=keys["broker"])
    assert own.status_code == 200 and nodes.seen[-1].ctx.jurisdiction == "US"


def test_erasure_by_subject_operator_and_tenant_scopes(tmp_path):
    client, nodes, keys, settings = service_in("eu", tmp_path, topology_file(tmp_path, {}))
    r = client.post("/v1/chat/completions", json=chat(temperature=0),
                    headers={**keys["eu-co"], "x-embassy-subject-id": "cust-42"})
    assert r.status_code == 200 and nodes.seen[-1].ctx.subject == "cust-42"
    bad = client.post("/v1/chat/completions", json=chat(), headers={**keys["eu-co"], "x-embassy-subject-id": "a b"})
    assert_error(bad, 400, param="x-embassy-subject-id")
    mine = client.post("/v1/admin/erase", json={"subject": "cust-42"}, headers=keys["eu-co"])
    assert mine.status_code == 200, mine.text
    assert mine.json()["tenant"] == "eu-co" and nodes.erased[-1] == ("cust-42", "eu-co")
    assert mine.json()["chunks_removed"] == 2 and mine.json()["region"] == "eu"
    admin = {"Authorization": f"Bearer {create_key(settings.keys_path, None, admin=True)}"}
    everyone = client.post("/v1/admin/erase", json={"subject": "cust-42"}, headers=admin)
    assert everyone.status_code == 200 and nodes.erased[-1] == ("cust-42", None)
    assert_error(client.post("/v1/admin/erase", json={"subject": ""}, headers=admin), 400, param="subject")
    assert_error(client.post("/v1/admin/erase", json={"subject": "x", "all": True}, headers=admin), 400)
    assert_error(client.post("/v1/admin/erase", json={"subject": "x"}), 401)


def test_a_tenant_override_widens_where_its_data_may_go(tmp_path):
    data = yaml.safe_load((PROJECT_ROOT / "cluster_configs" / "regions.yaml").read_text())
    data["tenants"]["eu-co"] = {"jurisdiction": "EU", "models": [MODEL],
                                "residency": {"process": ["eu", "us"], "store": ["eu"]}}
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(data))
    client, nodes, keys, _ = service_in("us", tmp_path, path)
    r = client.post("/v1/chat/completions", json=chat(temperature=0), headers=keys["eu-co"])
    assert r.status_code == 200 and nodes.seen  # processed in us by this tenant's contract
    client.post("/v1/chat/completions", json=chat(temperature=0), headers=keys["eu-co"])
    assert nodes.cached == {}  # but stored only in eu


def test_a_member_state_code_gets_its_unions_policy_not_the_default(tmp_path, peer):
    """A German or French data subject is an EU data subject: never served in the US (the
    topology lists no policy for DE itself, and the default allows anywhere)."""
    client, nodes, keys, _ = service_in("us", tmp_path, topology_file(tmp_path, {"eu": peer}))
    for code in ("DE", "FR"):
        r = client.post("/v1/chat/completions", json=chat(), headers={**keys["broker"], "x-embassy-data-subject": code})
        assert_error(r, 421, "misdirected_request")
    assert nodes.seen == []
    served = client.post("/v1/chat/completions", json=chat(), headers={**keys["broker"], "x-embassy-data-subject": "US"})
    assert served.status_code == 200 and nodes.seen[-1].ctx.jurisdiction == "US"


@pytest.mark.parametrize("code,status,error", [("DE", 421, "misdirected_request"),
                                               ("ZZ", 403, "unknown_jurisdiction")])
def test_a_tenant_configured_with_a_member_state_or_an_unknown_code(tmp_path, peer, code, status, error):
    """`jurisdiction: DE` is held to the EU's policy; an unknown code fails closed."""
    _, nodes, _, settings = service_in("us", tmp_path, topology_file(tmp_path, {"eu": peer}))
    settings = EmbassySettings.model_validate({**settings.model_dump(mode="json"),
                                               "tenants": {"co": {"jurisdiction": code, "models": [MODEL]}}})
    service = ChatService(settings, KeyStore.from_settings(settings), nodes, {MODEL: 100})

    async def readiness():
        return nodes.readiness()
    r = TestClient(create_app(service, readiness)).post(
        "/v1/chat/completions", json=chat(), headers={"Authorization": f"Bearer {create_key(settings.keys_path, 'co')}"})
    assert_error(r, status, error)
    assert nodes.seen == []


def test_an_unknown_code_is_refused_not_served_under_the_default(tmp_path):
    client, nodes, keys, _ = service_in("us", tmp_path, topology_file(tmp_path, {}))
    r = client.post("/v1/chat/completions", json=chat(), headers={**keys["broker"], "x-embassy-data-subject": "ZZ"})
    err = assert_error(r, 400)
    assert err["param"] == "x-embassy-data-subject" and "'ZZ'" in err["message"]
    assert nodes.seen == []
