"""The multi-region topology (`cluster_configs/regions.yaml`) and the residency policy in it.

One file names the regions (endpoint, address, Redis, vector store, models, autoscaling,
fail-over), maps countries to a home region, and states per jurisdiction where its data
subjects' data may be processed and stored, with per-tenant overrides. Everything else is
derived from it: each region's settings, Serve config, Ray cluster and KubeRay manifests
(`embassy/render.py`) and the geo-DNS zone (`embassy/geodns.py`).

`load_topology(path)` raises `ConfigError` listing every problem, each naming the file and
the field: unknown regions, countries with two homes or none, fail-over cycles, overlapping
test subnets, missing endpoints, and policies that would send data where it may not go.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from embassy.errors import ConfigError
from embassy.settings import DeploymentSettings, Identifier, TenantSettings, format_validation_error, \
    read_yaml_mapping

Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
ANY = "*"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegionSpec(_Strict):
    endpoint: str = Field(description="Base URL clients use for this region, e.g. https://eu.api.example.com.")
    address: str = Field(description="IPv4 address the geo-DNS answers for this region.")
    countries: list[Country] = Field(default_factory=list, description="Countries whose home region this is.")
    failover: Identifier | None = Field(
        None, description="The next region to try when this one is down (followed as a chain; the "
                          "residency policy decides which of them a client may be sent to).")
    redis_url: str | None = Field(None, description="The region's Redis; null: started locally.")
    vector_store: dict[str, Any] = Field(
        default_factory=dict, description="`retriever` settings of the region (backend, path, weaviate).")
    models: list[Identifier] = Field(min_length=1)
    autoscaling: dict[Literal["ingress", "guardrail", "cache", "retriever", "llm"], DeploymentSettings] = \
        Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict, description="Any other region settings (merged last).")


class Residency(_Strict):
    """Where a jurisdiction's data subjects' data may go. `process` and `store` list regions,
    or "*" for any region not in `deny`."""

    members: list[Country] = Field(default_factory=list, description="Countries of this jurisdiction "
                                                                       "(a country not listed is its own).")
    process: list[Identifier] | Literal["*"]
    store: list[Identifier] | Literal["*"] | None = Field(None, description="Default: where it may be processed.")
    deny: list[Identifier] = Field(default_factory=list)

    def allows(self, region: str, what: Literal["process", "store"] = "process") -> bool:
        allowed = self.process if what == "process" or self.store is None else self.store
        if region in self.deny:
            return False
        return allowed == ANY or region in allowed


class TopologyTenant(TenantSettings):
    residency: Residency | None = Field(None, description="Overrides the jurisdiction's policy for this tenant.")


class DnsSpec(_Strict):
    zone: str = Field("api.embassy.test", description="The geo name clients resolve.")
    ttl: Annotated[int, Field(ge=1)] = 30
    nameserver: str = "ns1.embassy.test"
    subnets: dict[str, Country] = Field(
        default_factory=dict, description="Client networks -> country, for private or test networks "
                                          "that a public GeoIP database does not know.")


class Topology(_Strict):
    base_config: Path = Field(Path("cluster_configs/local.yaml"), description="Region settings every region "
                                                                              "starts from.")
    regions: dict[Identifier, RegionSpec]
    jurisdictions: dict[Annotated[str, Field(pattern=r"^[A-Z]{2}$")], Residency]
    default_residency: Residency = Field(description="For jurisdictions not listed.")
    tenants: dict[Identifier, TopologyTenant] = Field(default_factory=dict)
    dns: DnsSpec = DnsSpec()

    # -- the policy ----------------------------------------------------------------------

    def jurisdiction_of(self, country: str) -> str:
        for code, policy in self.jurisdictions.items():
            if country == code or country in policy.members:
                return code
        return country

    def residency(self, jurisdiction: str, tenant: str | None = None) -> Residency:
        t = self.tenants.get(tenant) if tenant else None
        if t is not None and t.residency is not None and jurisdiction == t.jurisdiction:
            return t.residency
        return self.jurisdictions.get(jurisdiction, self.default_residency)

    def knows(self, code: str) -> bool:
        """A jurisdiction this topology has a policy for, a member of one, or a country with a
        home region. Anything else would fall to `default_residency`, which is for countries
        listed without a jurisdiction of their own, never for a code nobody wrote down."""
        return self.jurisdiction_of(code) in self.jurisdictions or self.home_of(code) is not None

    def tenant_problems(self, tenants: dict, where: str = "tenants") -> list[str]:
        """Tenants (name -> settings with a `jurisdiction`) whose jurisdiction is unknown here."""
        return [f"{where}.{name}.jurisdiction: {t.jurisdiction!r} is neither a jurisdiction nor a country "
                f"of this topology (jurisdictions: {sorted(self.jurisdictions)})"
                for name, t in tenants.items() if not self.knows(t.jurisdiction)]

    def home_of(self, country: str) -> str | None:
        return next((name for name, r in self.regions.items() if country in r.countries), None)

    def chain(self, region: str) -> list[str]:
        """The region and its fail-over chain, in order."""
        out = [region]
        while (nxt := self.regions[out[-1]].failover) is not None and nxt not in out:
            out.append(nxt)
        return out

    def allowed_regions(self, jurisdiction: str, tenant: str | None = None) -> list[str]:
        policy = self.residency(jurisdiction, tenant)
        return [r for r in self.regions if policy.allows(r)]

    def serving_order(self, country: str) -> list[str]:
        """Regions a client in `country` may be sent to: home first, then its fail-over
        chain, keeping only regions its jurisdiction's policy allows."""
        home = self.home_of(country)
        if home is None:
            return []
        policy = self.residency(self.jurisdiction_of(country))
        return [r for r in self.chain(home) if policy.allows(r)]

    # -- validation ----------------------------------------------------------------------

    def problems(self) -> list[str]:
        out: list[str] = []
        known = set(self.regions)

        def region_ref(where: str, name: str) -> None:
            if name not in known:
                out.append(f"{where}: unknown region {name!r} (regions: {sorted(known)})")

        seen_country: dict[str, str] = {}
        for name, r in self.regions.items():
            if r.redis_url and (problem := redis_url_problem(r.redis_url, need_password=False)):
                out.append(f"regions.{name}.redis_url: {problem}")
            url = urlparse(r.endpoint)
            if url.scheme not in ("http", "https") or not url.hostname:
                out.append(f"regions.{name}.endpoint: not an http(s) URL: {r.endpoint!r}")
            try:
                ipaddress.IPv4Address(r.address)
            except ValueError:
                out.append(f"regions.{name}.address: not an IPv4 address: {r.address!r}")
            if r.failover is not None:
                region_ref(f"regions.{name}.failover", r.failover)
            for c in r.countries:
                if c in seen_country:
                    out.append(f"regions.{name}.countries: {c} already has home region {seen_country[c]!r}")
                seen_country[c] = name
        for name in self.regions:  # a chain must end
            path, current = [name], self.regions[name].failover
            while current is not None and current in known:
                if current in path:
                    out.append(f"regions.{name}.failover: cycle {' -> '.join(path + [current])}")
                    break
                path.append(current)
                current = self.regions[current].failover
        for code, policy in {**self.jurisdictions, "default_residency": self.default_residency}.items():
            where = f"jurisdictions.{code}" if code != "default_residency" else code
            for field in ("process", "store", "deny"):
                value = getattr(policy, field)
                for region in (value if isinstance(value, list) else []):
                    region_ref(f"{where}.{field}", region)
            if isinstance(policy.store, list) and any(not policy.allows(r) for r in policy.store):
                out.append(f"{where}.store: stores data in a region where it may not be processed")
        for code, policy in self.jurisdictions.items():
            for c in policy.members:
                if self.home_of(c) is None:
                    out.append(f"jurisdictions.{code}.members: country {c} has no home region")
        for c, home in seen_country.items():
            j = self.jurisdiction_of(c)
            if not self.residency(j).allows(home):
                out.append(f"regions.{home}.countries: {c} is a {j} jurisdiction country, whose data may "
                           f"not be processed in {home!r} (jurisdictions.{j}.process)")
        out += self.tenant_problems(self.tenants)
        for name, t in self.tenants.items():
            if t.residency is not None:
                for field in ("process", "store", "deny"):
                    value = getattr(t.residency, field)
                    for region in (value if isinstance(value, list) else []):
                        region_ref(f"tenants.{name}.residency.{field}", region)
            if not self.allowed_regions(t.jurisdiction, name):
                out.append(f"tenants.{name}: no region may process {t.jurisdiction} data for this tenant")
        nets = []
        for cidr, country in self.dns.subnets.items():
            try:
                nets.append((ipaddress.ip_network(cidr), cidr))
            except ValueError:
                out.append(f"dns.subnets: {cidr!r} is not a network")
                continue
            if self.home_of(country) is None:
                out.append(f"dns.subnets.{cidr}: country {country} has no home region")
        for i, (a, a_name) in enumerate(nets):
            for b, b_name in nets[i + 1:]:
                if a.version == b.version and a.overlaps(b):
                    out.append(f"dns.subnets: {a_name} overlaps {b_name}")
        return out


def redis_url_problem(url: str, need_password: bool = True) -> str | None:
    """What is wrong with a Redis URL for a region's cache, if anything. Off loopback it must
    use TLS (rediss://) and, where it is used, AUTH: anyone who can write the cache could
    otherwise plant answers (hits are screened again, but a poisoned cache is still an outage).
    The topology's committed URLs carry no password; the deployment's secret supplies it
    (EMBASSY__CACHE__REDIS_URL)."""
    parsed = urlparse(url)
    try:
        loopback = ipaddress.ip_address(parsed.hostname or "").is_loopback
    except ValueError:
        loopback = parsed.hostname == "localhost"
    if loopback:
        return None
    if parsed.scheme != "rediss":
        return f"{parsed.scheme}:// to {parsed.hostname} is unencrypted; use rediss:// (TLS) off loopback"
    if need_password and not parsed.password:
        return (f"no password for {parsed.hostname}: Redis off loopback needs AUTH; set "
                "EMBASSY__CACHE__REDIS_URL=rediss://USER:PASSWORD@HOST:PORT from the deployment's secret")
    return None


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology file.

    Raises:
        ConfigError: every problem found, each naming the file and the field.
    """
    path = Path(path)
    data = read_yaml_mapping(path)
    try:
        topology = Topology.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from None
    problems = topology.problems()
    if problems:
        raise ConfigError("invalid topology\n" + "\n".join(f"{path}: {p}" for p in problems))
    return topology
