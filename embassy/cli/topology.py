"""The multi-region topology: `embassy config` (validate, render) and `embassy dns serve`."""

from __future__ import annotations

from pathlib import Path

import typer

from embassy.cli.common import DEFAULT_TOPOLOGY, TopologyOpt, _topology, console, err

config_app = typer.Typer(help="The multi-region topology and the files rendered from it.",
                         no_args_is_help=True)
dns_app = typer.Typer(help="The geo-DNS front.", no_args_is_help=True)


@config_app.command("validate")
def config_validate(topology: Path = TopologyOpt) -> None:
    """Check the topology and residency policy, and every region's settings derived from it."""
    from pydantic import ValidationError

    from embassy.render import region_settings
    from embassy.settings import format_validation_error

    topo = _topology(topology)
    problems = []
    for region in topo.regions:
        try:
            region_settings(topo, region, topology)
        except ValidationError as exc:
            problems.append(format_validation_error(f"{topology}: regions.{region} (rendered settings)", exc))
    if problems:
        err.print("[red]" + "\n".join(problems) + "[/red]")
        raise typer.Exit(2)
    console.print(f"{topology}: {len(topo.regions)} regions, {sum(len(r.countries) for r in topo.regions.values())} "
                  f"countries, {len(topo.jurisdictions)} jurisdiction policies: valid")


@config_app.command("render")
def config_render(region: str = typer.Option(..., "--region", "-r"), topology: Path = TopologyOpt,
                  out: Path = typer.Option(None, "--out", help="Folder; default cluster_configs/regions/<region>/.")
                  ) -> None:
    """Write the region's settings, Serve config, Ray cluster launcher YAML and KubeRay RayService."""
    from embassy.render import render_region

    topo = _topology(topology)
    if region not in topo.regions:
        err.print(f"[red]{topology}: regions: no region {region!r} (regions: {sorted(topo.regions)})[/red]")
        raise typer.Exit(2)
    folder = out or DEFAULT_TOPOLOGY.parent / "regions" / region
    for kind, path in render_region(topo, region, topology, folder).items():
        console.print(f"{kind:12s} {path}")


@dns_app.command("serve")
def dns_serve(topology: Path = TopologyOpt, port: int = typer.Option(5353, "--port"),
              address: str = typer.Option("127.0.0.1", "--address"),
              geoip_db: Path = typer.Option(None, "--geoip-db", help="A MaxMind-format country database; "
                                            "default: one built from the topology's dns.subnets."),
              down: list[str] = typer.Option([], "--down", help="Treat this region as down (repeatable)."),
              health_interval: float = typer.Option(5.0, "--health-interval",
                                                    help="Seconds between /readyz probes of every region "
                                                         "(0: no probes; only --down counts)."),
              state_dir: Path = typer.Option(Path(".embassy/dns"), "--state-dir")) -> None:
    """Run PowerDNS's GeoIP backend for the topology's zone, re-rendering the zone when a
    region goes down or comes back (fail-over only where the residency policy allows)."""
    import signal
    import time

    from embassy.geodns import build_geoip_db, probe_down, start_geodns

    def _interrupt(*_):  # a supervisor's SIGTERM stops PowerDNS too (it runs in its own session)
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _interrupt)
    topo = _topology(topology)
    unknown = sorted(set(down) - set(topo.regions))
    if unknown:
        err.print(f"[red]--down: unknown region(s) {unknown}[/red]")
        raise typer.Exit(2)
    if geoip_db is None:
        if not topo.dns.subnets:
            err.print(f"[red]{topology}: dns.subnets is empty; pass --geoip-db with a country database[/red]")
            raise typer.Exit(2)
        geoip_db = build_geoip_db(topo.dns.subnets, state_dir / "subnets.mmdb")
    current = set(down) | (probe_down(topo) if health_interval > 0 else set())
    console.print(f"geo-DNS for {topo.dns.zone} on {address}:{port} (down: {sorted(current) or 'none'})")
    server = None
    try:
        # Inside the try: a SIGTERM while PowerDNS starts stops it too (start_geodns).
        server = start_geodns(topo, state_dir / "pdns", port, geoip_db, current, address)
        while True:
            time.sleep(health_interval if health_interval > 0 else 3600)
            now = set(down) | probe_down(topo)
            if now != current:
                server.stop()
                server = start_geodns(topo, state_dir / "pdns", port, geoip_db, now, address)
                console.print(f"regions down: {sorted(now) or 'none'}; zone re-rendered")
                current = now
    except RuntimeError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.stop()
