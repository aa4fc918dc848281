"""Prometheus metrics shared by every node (prometheus-client).

Each replica is its own process. `embassy serve` sets PROMETHEUS_MULTIPROC_DIR for the
whole Ray cluster, so every replica on a host writes to one folder and the ingress's
`/metrics` sums them (prometheus-client's multiprocess mode). Without that variable (unit
tests) the process-local default registry is used.

Label values are bounded: tenants not in the config fold into "unknown", statuses are
HTTP codes, stages and nodes are fixed names.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, \
    generate_latest
from prometheus_client import multiprocess

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter("embassy_requests_total", "Chat requests by final HTTP status.",
                   ["region", "model", "tenant", "status"])
STAGE_LATENCY = Histogram("embassy_stage_latency_seconds",
                          "Time spent in each graph stage, hop included.",
                          ["region", "stage"], buckets=LATENCY_BUCKETS)
REQUEST_LATENCY = Histogram("embassy_request_latency_seconds", "End-to-end request latency.",
                            ["region", "model"], buckets=LATENCY_BUCKETS)
TIME_TO_FIRST_TOKEN = Histogram("embassy_time_to_first_token_seconds",
                                "From request arrival to the first generated text.",
                                ["region", "model"], buckets=LATENCY_BUCKETS)
TOKENS = Counter("embassy_tokens_total", "Prompt and completion tokens.",
                 ["region", "model", "tenant", "kind"])
INFLIGHT = Gauge("embassy_inflight_requests", "Requests admitted by the ingress and not finished.",
                 ["region"], multiprocess_mode="livesum")
NODE_READY = Gauge("embassy_node_ready", "1 when the node has a running replica.",
                   ["region", "node"], multiprocess_mode="livemax")
LLM_RUNNING = Gauge("embassy_llm_engine_requests_running", "Requests inside the engine.",
                    ["model"], multiprocess_mode="livesum")
LLM_ABORTED = Counter("embassy_llm_engine_requests_aborted_total",
                      "Engine requests aborted before they finished (client gone, timeout).",
                      ["model"])

CACHE_LOOKUPS = Counter("embassy_cache_lookups_total", "Cache lookups by outcome (hit, miss, bypass).",
                        ["region", "outcome", "tier"])
CACHE_BYPASS = Counter("embassy_cache_bypass_total", "Requests that skipped the cache, by reason.",
                       ["region", "reason"])
CACHE_REJECTED = Counter("embassy_cache_verification_rejected_total",
                         "Candidate hits the verifier turned down, by check.", ["region", "check"])
CACHE_HIT_LATENCY = Histogram("embassy_cache_hit_latency_seconds", "Lookup time of a hit, inside the cache node.",
                              ["region", "tier"], buckets=LATENCY_BUCKETS)
CACHE_TOKENS_SAVED = Counter("embassy_cache_tokens_saved_total", "Completion tokens served from the cache.",
                             ["region", "model", "tenant"])
CACHE_STORES = Counter("embassy_cache_stores_total", "Answers offered to the cache, by decision.",
                       ["region", "decision"])
CACHE_EVICTIONS = Counter("embassy_cache_evictions_total", "Keys Redis evicted under maxmemory.", ["region"])
CACHE_INVALIDATED = Counter("embassy_cache_invalidated_total", "Entries removed by invalidation.", ["region"])

RETRIEVALS = Counter("embassy_retrievals_total",
                     "Retrievals by outcome (grounded, nothing_relevant, no_corpus).", ["region", "status"])
RETRIEVER_INJECTIONS = Counter("embassy_retriever_injections_total",
                               "Retrieved passages carrying instructions to the model, by action "
                               "(neutralized: those sentences removed; dropped: nothing else left).",
                               ["region", "action"])

GROUNDEDNESS = Histogram("embassy_groundedness_score", "Groundedness of answers given retrieved passages "
                         "(the least supported sentence; 1 fully supported).", ["region"],
                         buckets=(0.1, 0.2, 0.3, 0.37, 0.45, 0.55, 0.65, 0.8, 0.9, 1.0))
GROUNDEDNESS_FLAGGED = Counter("embassy_groundedness_flagged_total",
                               "Answers flagged as not supported by their passages, by action (warn, refuse).",
                               ["region", "action"])
DRIFT_P_VALUE = Gauge("embassy_drift_p_value", "p-value of the last drift check, by signal.", ["region", "signal"],
                      multiprocess_mode="livemin")
DRIFT_STATISTIC = Gauge("embassy_drift_statistic", "Statistic of the last drift check (MMD² or KS), by signal.",
                        ["region", "signal"], multiprocess_mode="livemax")
DRIFT_DETECTED = Counter("embassy_drift_detected_total", "Drift alarms, by signal.", ["region", "signal"])
REQUEST_OUTCOMES = Counter("embassy_request_outcomes_total",
                           "Chat requests by outcome: served, cache_hit, no_answer, refused_<category>, "
                           "misdirected, error_<status>.", ["region", "model", "tenant", "outcome"])
INTER_TOKEN_LATENCY = Histogram("embassy_inter_token_latency_seconds",
                                "Mean time between generated tokens of a request.", ["region", "model"],
                                buckets=(0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1))
# By model version, so that a canary and its stable version can be compared on a dashboard.
MODEL_VERSION_REQUESTS = Counter("embassy_model_version_requests_total",
                                 "Chat requests by the model version that answered, and outcome.",
                                 ["region", "model", "version", "outcome"])
MODEL_VERSION_TTFT = Histogram("embassy_model_version_ttft_seconds",
                               "Time to first token, by model version.", ["region", "model", "version"],
                               buckets=LATENCY_BUCKETS)
MODEL_VERSION_ITL = Histogram("embassy_model_version_inter_token_seconds",
                              "Mean time between tokens of a request, by model version.",
                              ["region", "model", "version"],
                              buckets=(0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1))
DEPLOYMENT_REPLICAS = Gauge("embassy_deployment_replicas", "Replicas of each graph node, by Serve state.",
                            ["region", "node", "state"], multiprocess_mode="livemax")
AUDIT_CHAIN_OK = Gauge("embassy_audit_chain_ok", "1 when the last verification of the region's audit "
                       "chains passed, 0 when one is broken.", ["region"], multiprocess_mode="livemin")
AUDIT_WRITE_ERRORS = Counter("embassy_audit_write_errors_total", "Audit records that could not be written.",
                             ["region"])


def render() -> tuple[bytes, str]:
    """The Prometheus text exposition of every process on this host."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
