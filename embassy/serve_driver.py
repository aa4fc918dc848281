"""Short-lived driver that hands the region's app to Serve's controller as a declarative
config (what `serve deploy` does), then exits.

Declarative, not `serve.run`: `serve.run` gives every deployment a new code version on each
call, so re-applying a config would restart every replica. From a config, Serve keeps the
code version (same import path and args) and applies a changed `user_config` (the
guardrail's policies, given as a deployment override as in a Serve config file) to the
running replicas in place.

    python -m embassy.serve_driver --address A --config PATH --app NAME --proxy-port P [--wait]
"""

from __future__ import annotations

import argparse
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--app", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--proxy-port", type=int, required=True)
    parser.add_argument("--wait", type=float, default=0, help="seconds to wait for RUNNING")
    args = parser.parse_args()

    import ray
    from ray import serve
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    from embassy.settings import load_settings
    from graphs.regional import live_guard_config

    live = live_guard_config(load_settings(args.config))
    ray.init(address=args.address, log_to_driver=False, namespace="serve")
    # The ingress replica serves the region's port itself (direct ingress); Serve's own
    # proxy is kept off it, on a spare port.
    http = {"host": args.host, "port": args.proxy_port}
    client = serve_start(http_options=http)
    client.deploy_apps(ServeDeploySchema.model_validate({
        "http_options": http,
        "applications": [{"name": args.app, "route_prefix": "/", "import_path": "graphs.regional:app",
                          "args": {"config": args.config},
                          "deployments": [{"name": "Guardrail", "user_config": live}]}]}))
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        app = serve.status().applications.get(args.app)
        if app is not None and app.status == "RUNNING":
            return 0
        if app is not None and app.status == "DEPLOY_FAILED":
            print(f"deploying {args.app} failed: {app.message}", file=sys.stderr)
            return 1
        time.sleep(1)
    return 0 if not args.wait else 1


if __name__ == "__main__":
    sys.exit(main())
