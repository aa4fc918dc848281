"""The geo-DNS front: PowerDNS with its GeoIP backend, zone data generated from the topology.

A client resolving the topology's `dns.zone` gets the address of the first region of its
country's serving order (home region, then its fail-over chain, keeping only regions its
jurisdiction's policy allows) that is not down. With every allowed region down it still
gets its home region, which then fails closed (503) rather than a region that may not
hold its data. The country comes from a GeoIP database (MaxMind format): the operator's
GeoLite2/GeoIP2 Country file, or one built from `dns.subnets` for private and test
networks (`build_geoip_db`). PowerDNS reads the client's address from the EDNS
client-subnet option when a resolver sends one.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from embassy.topology import Topology

PDNS_SERVER = "pdns_server"


def zone_data(topology: Topology, down: set[str] = frozenset()) -> dict:
    """The GeoIP backend's zone file content for the topology's zone."""
    dns = topology.dns
    zone = dns.zone.rstrip(".")
    countries = sorted({c for r in topology.regions.values() for c in r.countries})
    records: dict[str, list] = {
        zone: [{"soa": f"{dns.nameserver} hostmaster.{zone} {int(time.time())} 7200 3600 86400 {dns.ttl}"},
               {"ns": dns.nameserver}],
    }
    for country in countries:
        order = topology.serving_order(country)
        target = next((r for r in order if r not in down), order[0] if order else None)
        if target is not None:
            records[f"{country.lower()}.{zone}"] = [{"a": topology.regions[target].address}]
    # Clients whose country no region claims: the first region that serves "anyone" (the
    # default policy) and is up, else the first such region. The record must exist: with
    # no fallback name PowerDNS answers nothing even for countries that have one.
    anyone = [r for r in topology.regions if topology.default_residency.allows(r)] or list(topology.regions)
    default = next((r for r in anyone if r not in down), anyone[0])
    records[f"default.{zone}"] = [{"a": topology.regions[default].address}]
    return {"domains": [{"domain": zone, "ttl": dns.ttl, "records": records,
                         "services": {zone: [f"%cc.{zone}", f"default.{zone}"]}}]}


def build_geoip_db(subnets: dict[str, str], path: Path) -> Path:
    """A MaxMind-format country database for the given networks (IPv4)."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=4, database_type="GeoIP2-Country", languages=["en"],
                        description="Embassy test networks")
    for cidr, country in subnets.items():
        writer.insert_network(IPSet([cidr]), {"country": {"iso_code": country}})
    path.parent.mkdir(parents=True, exist_ok=True)
    writer.to_db_file(str(path))
    return path


@dataclass
class GeoDns:
    """A running pdns_server on loopback, answering for the topology's zone."""

    process: subprocess.Popen
    port: int
    folder: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def write_config(topology: Topology, folder: Path, port: int, geoip_db: Path, down: set[str] = frozenset(),
                 address: str = "127.0.0.1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    zones = folder / "zones.yaml"
    zones.write_text(yaml.safe_dump(zone_data(topology, down), sort_keys=False))
    (folder / "pdns.conf").write_text("\n".join([
        "launch=geoip",
        f"geoip-database-files=mmdb:{geoip_db}",
        f"geoip-zones-file={zones}",
        f"local-address={address}",
        f"local-port={port}",
        f"socket-dir={folder}",
        "daemon=no", "guardian=no", "disable-syslog=yes", "loglevel=4",
        "edns-subnet-processing=yes",
        "query-cache-ttl=0", "cache-ttl=0", "negquery-cache-ttl=0",  # fail-over shows at once
        "security-poll-suffix=",  # no outbound security-status query
        "",
    ]))
    return folder


def start_geodns(topology: Topology, folder: Path, port: int, geoip_db: Path, down: set[str] = frozenset(),
                 address: str = "127.0.0.1", wait_s: float = 10.0) -> GeoDns:
    """Start PowerDNS (Debian's pdns-server and pdns-backend-geoip) and wait until it answers.

    Raises:
        RuntimeError: pdns_server is not installed or did not come up (its log is named).
    """
    binary = shutil.which(PDNS_SERVER) or (f"/usr/sbin/{PDNS_SERVER}" if Path(f"/usr/sbin/{PDNS_SERVER}").exists()
                                           else None)
    if binary is None:
        raise RuntimeError("pdns_server not found: install Debian's pdns-server and pdns-backend-geoip")
    write_config(topology, folder, port, geoip_db, down, address)
    log = (folder / "pdns.log").open("ab")
    process = subprocess.Popen([binary, f"--config-dir={folder}"], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    dns = GeoDns(process, port, folder)
    deadline = time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"pdns_server exited with {process.returncode}; see {folder / 'pdns.log'}")
            # Any reply, even one with no address, means the server is up.
            if resolve(topology.dns.zone, "127.0.0.1" if address == "0.0.0.0" else address, port,
                       timeout=0.5) is not None:
                return dns
            time.sleep(0.2)
    except BaseException:  # interrupted while waiting (a supervisor's SIGTERM): no orphan
        dns.stop()
        raise
    dns.stop()
    raise RuntimeError(f"pdns_server did not answer on {address}:{port}; see {folder / 'pdns.log'}")


def resolve(name: str, server: str, port: int, client_subnet: str | None = None,
            timeout: float = 2.0) -> list[str] | None:
    """A records for `name` as the server answers a client in `client_subnet` (EDNS
    client-subnet); None when the server does not answer."""
    import dns.edns
    import dns.message
    import dns.query
    import dns.rdatatype

    options = []
    if client_subnet:
        network, _, prefix = client_subnet.partition("/")
        options.append(dns.edns.ECSOption(network, int(prefix or 24)))
    query = dns.message.make_query(name, dns.rdatatype.A, use_edns=0, options=options)
    try:
        reply = dns.query.udp(query, server, port=port, timeout=timeout)
    except Exception:
        return None
    return sorted(item.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for item in rrset)


def probe_down(topology: Topology, timeout_s: float = 2.0) -> set[str]:
    """Regions whose `/readyz` does not answer 200 (health checks only: no payload crosses)."""
    import httpx

    down = set()
    for name, r in topology.regions.items():
        try:
            ok = httpx.get(f"{r.endpoint.rstrip('/')}/readyz", timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            ok = False
        if not ok:
            down.add(name)
    return down
