"""Short-lived driver that hands the region's applications to Serve's controller as a
declarative config (what `serve deploy` does), then exits.

Declarative, not `serve.run`: `serve.run` gives every deployment a new code version on each
call, so re-applying a config would restart every replica. From a config, Serve keeps the
code version (same import path and args) and applies a changed `user_config` (the
guardrail's policies, the ingress's model routes) to the running replicas in place. An
application left out of the config (a retired model version) is deleted.

    python -m embassy.serve_driver --address A --config PATH --app NAME --proxy-port P
        [--rollout STATE.json] [--wait SECONDS]

With --wait it exits 0 once every application runs, and 1 as soon as one fails to deploy,
printing `DEPLOY_FAILED <app>: <Serve's message>`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--app", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--proxy-port", type=int, required=True)
    parser.add_argument("--rollout", default=None, help="the region's model rollout state (JSON)")
    parser.add_argument("--wait", type=float, default=0, help="seconds to wait for RUNNING")
    args = parser.parse_args()

    import ray
    from ray import serve
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    from embassy.model_routes import RolloutState, effective_routes
    from embassy.serve_apps import applications, live_guard_config
    from embassy.settings import load_settings

    settings = load_settings(args.config)
    state = RolloutState.read(Path(args.rollout)) if args.rollout else RolloutState()
    apps = applications(args.app, args.config, effective_routes(settings, state), live_guard_config(settings))
    ray.init(address=args.address, log_to_driver=False, namespace="serve")
    # The ingress replica serves the region's port itself (direct ingress); Serve's own
    # proxy is kept off it, on a spare port.
    http = {"host": args.host, "port": args.proxy_port}
    client = serve_start(http_options=http)
    client.deploy_apps(ServeDeploySchema.model_validate({"http_options": http, "applications": apps}))
    names = [a["name"] for a in apps]
    deadline = time.monotonic() + args.wait
    time.sleep(min(args.wait, 1.0))  # let the controller take the new config before reading status
    while time.monotonic() < deadline:
        statuses = serve.status().applications
        for name in names:
            app = statuses.get(name)
            if app is not None and app.status == "DEPLOY_FAILED":
                print(f"DEPLOY_FAILED {name}: {app.message}", file=sys.stderr)
                return 1
        if all(name in statuses and statuses[name].status == "RUNNING" for name in names):
            return 0
        time.sleep(1)
    return 0 if not args.wait else 1


if __name__ == "__main__":
    sys.exit(main())
