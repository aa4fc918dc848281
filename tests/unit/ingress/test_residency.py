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
from embassy.errors import ConfigError, MisdirectedRequest, ServiceUnavailable, UnknownJurisdiction
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


def test_the_audit_record_keeps_no_content_where_it_may_not_be_stored(tmp_path):
    """Served in Singapore, storable only in India: the record keeps metadata and a keyed
    digest, not the prompt or the answer. At home in India it keeps them."""
    from embassy.audit import export, keyed_digest, key_for

    prompt = "quokka shipment status?"
    kept = {}
    for region in ("sg", "in"):
        folder = tmp_path / region
        folder.mkdir()
        client, nodes, keys, settings = service_in(region, folder, topology_file(folder, {}))
        r = client.post("/v1/chat/completions", headers=keys["in-co"],
                        json=chat(messages=[{"role": "user", "content": prompt}]))
        assert r.status_code == 200, r.text
        record = next(x for x in export(settings.audit_root) if x["kind"] == "request")
        everything = b"".join(p.read_bytes() for p in settings.audit_root.rglob("*") if p.is_file())
        kept[region] = (record, prompt.encode() in everything, key_for(settings))
    record, found, key = kept["sg"]
    assert record["content"] is None and not found
    assert record["fields"]["content_hmac"] == keyed_digest(key, {"prompt": prompt, "answer": "alpha beta gamma"})
    assert record["fields"]["status"] == 200 and record["fields"]["jurisdiction"] == "IN"
    record, found, _ = kept["in"]
    assert record["content"]["prompt"] == prompt and found and "content_hmac" not in record["fields"]


def test_the_guard_endpoint_is_gated_like_chat(tmp_path, peer):
    """/v1/guard reads the text it screens: a region that may not process the tenant's
    data refuses it (421) before reading it, for a tenant's key and an operator's alike."""
    client, nodes, keys, settings = service_in("us", tmp_path, topology_file(tmp_path, {"eu": peer}))
    nodes.guarded = None
    r = client.post("/v1/guard", json={"text": "Where is shipment 42?"}, headers=keys["eu-co"])
    assert_error(r, 421, "misdirected_request")
    admin = {"Authorization": f"Bearer {create_key(settings.keys_path, None, admin=True)}"}
    r = client.post("/v1/guard", json={"text": "Where is shipment 42?", "tenant": "eu-co"}, headers=admin)
    assert_error(r, 421, "misdirected_request")
    r = client.post("/v1/guard", json={"text": "x"}, headers={**keys["broker"], "x-embassy-data-subject": "DE"})
    assert_error(r, 421, "misdirected_request")
    assert nodes.guarded is None  # nothing reached the guard
    assert client.post("/v1/guard", json={"text": "x"}, headers=keys["broker"]).status_code == 200


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
    # Subject ids are per tenant: an operator names the tenant, and a tenant cannot name another.
    assert_error(client.post("/v1/admin/erase", json={"subject": "cust-42"}, headers=admin), 400, param="tenant")
    theirs = client.post("/v1/admin/erase", json={"subject": "cust-42", "tenant": "in-co"}, headers=keys["eu-co"])
    assert_error(theirs, 403, param="tenant")
    named = client.post("/v1/admin/erase", json={"subject": "cust-42", "tenant": "in-co"}, headers=admin)
    assert named.status_code == 200 and nodes.erased[-1] == ("cust-42", "in-co")
    from embassy.audit import export
    records = list(export(settings.audit_root))
    requested = [r for r in records if r["action"] == "erase.requested"]
    assert [r["fields"]["tenant_erased"] for r in requested] == ["eu-co", "in-co"]
    assert requested[0]["fields"]["by"] == "tenant" and requested[1]["fields"]["by"] == "operator"
    served = next(r for r in records if r["kind"] == "request" and r["subject"] == "cust-42")
    assert served["content"]["erased"] is True and served["content"]["by"] == "tenant:eu-co"
    assert served["content"]["erasure_record"] == requested[0]["seq"]
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


def _service_with_tenant(tmp_path, peer, code):
    _, nodes, _, settings = service_in("us", tmp_path, topology_file(tmp_path, {"eu": peer}))
    settings = EmbassySettings.model_validate({**settings.model_dump(mode="json"),
                                               "tenants": {"co": {"jurisdiction": code, "models": [MODEL]}}})
    return ChatService(settings, KeyStore.from_settings(settings), nodes, {MODEL: 100}), nodes, settings


def test_a_tenant_configured_with_a_member_state_code_gets_its_unions_policy(tmp_path, peer):
    """`jurisdiction: DE` is held to the EU's policy."""
    service, nodes, settings = _service_with_tenant(tmp_path, peer, "DE")

    async def readiness():
        return nodes.readiness()
    r = TestClient(create_app(service, readiness)).post(
        "/v1/chat/completions", json=chat(), headers={"Authorization": f"Bearer {create_key(settings.keys_path, 'co')}"})
    assert_error(r, 421, "misdirected_request")
    assert nodes.seen == []


def test_a_tenant_with_an_unknown_jurisdiction_stops_the_region_at_load(tmp_path, peer):
    with pytest.raises(ConfigError) as err:
        _service_with_tenant(tmp_path, peer, "ZZ")
    assert "tenants.co.jurisdiction: 'ZZ' is neither a jurisdiction nor a country" in str(err.value)


def test_the_gate_itself_fails_closed_on_an_unknown_tenant_jurisdiction(tmp_path):
    """Behind the load-time check, the gate does not fall back to the default either (403)."""
    import asyncio

    from embassy.residency import ResidencyGate
    from embassy.tenants import Tenant
    from embassy.topology import load_topology

    gate = ResidencyGate(load_topology(topology_file(tmp_path, {})), "us")
    tenant = Tenant(id="co", jurisdiction="ZZ", models=frozenset({MODEL}))
    with pytest.raises(UnknownJurisdiction):
        asyncio.run(gate.admit(tenant, None, None))


def test_geodns_and_the_gate_agree_on_every_country(tmp_path):
    """Every region the geo-DNS front may send a country's clients to (home, then the
    fail-over chain the policy allows) admits that country's data subjects; every region it
    never sends them to because the policy forbids it refuses them."""
    import asyncio

    from embassy.residency import ResidencyGate
    from embassy.tenants import Tenant
    from embassy.topology import load_topology

    # Loopback endpoints where nothing listens: a refusal probes them and finds them down.
    topo = load_topology(topology_file(tmp_path, {r: f"http://127.0.0.1:{free_port()}" for r in
                                                  yaml.safe_load((PROJECT_ROOT / "cluster_configs" / "regions.yaml")
                                                                 .read_text())["regions"]}))
    broker = Tenant(id="broker", jurisdiction="US", models=frozenset({MODEL}), subject_header=True)
    gates = {r: ResidencyGate(topo, r, probe_timeout_s=0.2) for r in topo.regions}
    countries = sorted({c for r in topo.regions.values() for c in r.countries}
                       | {c for j in topo.jurisdictions.values() for c in j.members})
    assert len(countries) > 40

    async def admitted(region: str, country: str) -> bool:
        try:
            await gates[region].admit(broker, country, None)
            return True
        except (MisdirectedRequest, ServiceUnavailable):
            return False
    for country in countries:
        order = topo.serving_order(country)
        assert order, f"{country}: DNS has nowhere to send it"
        for region in topo.regions:
            allowed = topo.residency(topo.jurisdiction_of(country)).allows(region)
            assert asyncio.run(admitted(region, country)) == allowed, (country, region)
            if region in order:
                assert allowed, f"DNS may send {country} to {region}, which the gate refuses"


def test_an_unknown_code_is_refused_not_served_under_the_default(tmp_path):
    client, nodes, keys, _ = service_in("us", tmp_path, topology_file(tmp_path, {}))
    r = client.post("/v1/chat/completions", json=chat(), headers={**keys["broker"], "x-embassy-data-subject": "ZZ"})
    err = assert_error(r, 400)
    assert err["param"] == "x-embassy-data-subject" and "'ZZ'" in err["message"]
    assert nodes.seen == []
