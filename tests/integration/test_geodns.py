"""The geo-DNS front: a real PowerDNS (GeoIP backend) on a loopback port, a GeoIP database
built for test subnets (mmdb-writer), queries with an EDNS client-subnet option (dnspython)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from embassy.geodns import build_geoip_db, resolve, start_geodns
from embassy.settings import PROJECT_ROOT
from embassy.stack import free_port
from embassy.topology import load_topology

pytestmark = pytest.mark.skipif(shutil.which("pdns_server") is None and not os.path.exists("/usr/sbin/pdns_server"),
                                reason="PowerDNS is not installed (make install installs pdns-server)")
SUBNETS = {"10.1.0.0/16": "DE", "10.2.0.0/16": "US", "10.3.0.0/16": "IN", "10.4.0.0/16": "SG",
           "10.5.0.0/16": "AE", "10.6.0.0/16": "GB", "10.7.0.0/16": "JP", "10.8.0.0/16": "FR"}
CLIENT = {country: net.replace("0.0/16", "7.0/24") for net, country in SUBNETS.items()}


@pytest.fixture(scope="module")
def topology(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dns")
    data = yaml.safe_load((PROJECT_ROOT / "cluster_configs" / "regions.yaml").read_text())
    data["dns"]["subnets"] = SUBNETS
    path = tmp / "regions.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_topology(path), build_geoip_db(SUBNETS, tmp / "test.mmdb"), tmp


def addresses(topo, *regions):
    return sorted(topo.regions[r].address for r in regions)


@pytest.fixture
def dns_with(topology, tmp_path):
    topo, db, _ = topology
    started = []

    def start(down=frozenset()):
        port = free_port()
        started.append(start_geodns(topo, tmp_path / f"pdns{len(started)}", port, db, set(down)))
        return lambda country: resolve(topo.dns.zone, "127.0.0.1", port, CLIENT[country])
    yield start
    for server in started:
        server.stop()


def test_each_country_resolves_to_its_home_region(topology, dns_with):
    topo = topology[0]
    ask = dns_with()
    for country, region in {"DE": "eu", "FR": "eu", "US": "us", "IN": "in", "SG": "sg", "AE": "ae"}.items():
        assert ask(country) == addresses(topo, region), country


def test_failover_goes_only_where_the_policy_allows(topology, dns_with):
    topo = topology[0]
    ask = dns_with(down={"eu", "in", "sg"})
    assert ask("GB") == addresses(topo, "us")  # default policy: the fail-over chain eu -> us
    assert ask("DE") == addresses(topo, "eu")  # EU subjects never go abroad: fail closed at home
    assert ask("IN") == addresses(topo, "ae")  # in -> sg (down) -> ae; us is denied anyway
    assert ask("SG") == addresses(topo, "sg")  # Singapore-only data: no fail-over
    assert ask("JP") == addresses(topo, "ae")  # home sg down, chain sg -> ae
    assert ask("US") == addresses(topo, "us")


def test_dns_serve_command_probes_regions_and_stops_cleanly(topology, tmp_path):
    """`embassy dns serve` with regions on loopback where nothing listens: all count as
    down, and clients still get their home region (fail closed), never a disallowed one."""
    topo, db, tmp = topology
    data = yaml.safe_load(topo.model_dump_json())
    for i, region in enumerate(data["regions"].values()):
        region["endpoint"] = f"http://127.0.0.1:{free_port()}"
    path = tmp_path / "loopback.yaml"
    path.write_text(yaml.safe_dump(data))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "embassy.cli", "dns", "serve", "--topology", str(path),
                             "--port", str(port), "--geoip-db", str(db), "--health-interval", "1",
                             "--state-dir", str(tmp_path / "state")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        while (answer := resolve(topo.dns.zone, "127.0.0.1", port, CLIENT["DE"], timeout=0.5)) is None:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else ""
            time.sleep(0.3)
        assert answer == addresses(topo, "eu")
        assert resolve(topo.dns.zone, "127.0.0.1", port, CLIENT["IN"]) == addresses(topo, "in")
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=20)[0]
    assert "down: ['ae', 'eu', 'in', 'sg', 'us']" in " ".join(out.split())
    assert resolve(topo.dns.zone, "127.0.0.1", port, CLIENT["DE"], timeout=0.5) is None  # PowerDNS is gone


def _pdns_under(folder) -> list[int]:
    """PowerDNS processes whose config lives under `folder`."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
        except (OSError, ValueError):
            continue
        if b"pdns_server" in cmdline and str(folder).encode() in cmdline:
            pids.append(int(entry))
    return pids


def test_sigterm_while_powerdns_starts_leaves_no_orphan(topology, tmp_path):
    """A supervisor stopping `embassy dns serve` before PowerDNS answers: PowerDNS runs in
    its own session, so nothing else would ever stop it."""
    _, db, _ = topology
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "embassy.cli", "dns", "serve", "--topology",
                             str(PROJECT_ROOT / "cluster_configs" / "regions.yaml"), "--port", str(free_port()),
                             "--geoip-db", str(db), "--health-interval", "0", "--state-dir", str(state)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while not _pdns_under(state):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else ""
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    deadline = time.monotonic() + 10
    while _pdns_under(state) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _pdns_under(state) == []
