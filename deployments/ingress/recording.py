"""What the ingress records about requests: Prometheus metrics, the region's audit trail and
the drift detector, in one object so that the graph walk only says what happened."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from deployments.ingress.request_state import RequestRecord
from embassy import metrics
from embassy.canary import Sample
from embassy.audit import AuditIntegrityError, keyed_digest, writer_for
from embassy.drift import DriftDetector
from embassy.errors import AuditUnavailable
from embassy.graph_types import GuardVerdict, StageTimings
from embassy.residency import Admission
from embassy.settings import EmbassySettings
from embassy.tenants import Tenant
from embassy.version_samples import SampleLog

log = logging.getLogger("embassy.ingress")


def version_sample(record: RequestRecord, status: int) -> Sample:
    """What the canary analysis reads from one request. Client errors (4xx) and input-guard
    refusals say nothing about the version and count as answered; a server failure, or a
    stream cut by one, is an error."""
    by_model = record.cache != "hit" and record.answered_by != "no_answer_text"  # else no model timing
    return Sample(ok=status < 500, ttft_s=record.ttft_s if by_model else None,
                  itl_s=record.itl_s if by_model else None,
                  refused=record.finish == "content_filter", flagged=bool(record.ungrounded))


class Recorder:
    def __init__(self, settings: EmbassySettings) -> None:
        self.settings = settings
        self.region = settings.region
        self.audit = writer_for(settings, f"ingress-{socket.gethostname()}-{os.getpid()}")
        self.audit_failing = False  # the last audit write failed
        d = settings.drift
        self.drift = DriftDetector(d.reference_size, d.window, d.check_every, d.alpha, d.confirm) \
            if d.enabled else None
        self._background: set[asyncio.Task] = set()
        # While a model has a canary, each request of it leaves a sample for the analysis.
        self.samples = SampleLog(settings.cache.redis_url, settings.region, settings.rollout.sample_window) \
            if settings.cache.redis_url else None
        self.sampled_models: set[str] = set()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- metrics -----------------------------------------------------------------------

    async def timed(self, timings: StageTimings, stage: str, awaitable):
        t0 = time.perf_counter()
        try:
            return await awaitable
        finally:
            self.stage(timings, stage, t0)

    def stage(self, timings: StageTimings, stage: str, t0: float) -> None:
        """Record a stage that began at `t0` in the response's timings and the histogram."""
        seconds = time.perf_counter() - t0
        timings.add(stage, seconds * 1000)
        metrics.STAGE_LATENCY.labels(self.region, stage).observe(seconds)

    def first_token(self, model: str, started: float, record: RequestRecord) -> None:
        record.ttft_s = time.perf_counter() - started
        metrics.TIME_TO_FIRST_TOKEN.labels(self.region, model).observe(record.ttft_s)
        if record.model_version:
            metrics.MODEL_VERSION_TTFT.labels(self.region, model, record.model_version).observe(record.ttft_s)

    def inter_token(self, model: str, first_at: float, completion_tokens: int, record: RequestRecord) -> None:
        """Mean time between tokens after the first (batched deltas carry several)."""
        if completion_tokens > 1:
            record.itl_s = (time.perf_counter() - first_at) / (completion_tokens - 1)
            metrics.INTER_TOKEN_LATENCY.labels(self.region, model).observe(record.itl_s)
            if record.model_version:
                metrics.MODEL_VERSION_ITL.labels(self.region, model, record.model_version).observe(record.itl_s)

    def usage(self, tenant_label: str, model: str, prompt: int, completion: int) -> None:
        metrics.TOKENS.labels(self.region, model, tenant_label, "prompt").inc(prompt)
        metrics.TOKENS.labels(self.region, model, tenant_label, "completion").inc(completion)

    def groundedness(self, final: GuardVerdict, record: RequestRecord) -> None:
        score = final.scores.get("groundedness")
        if score is None:
            return
        metrics.GROUNDEDNESS.labels(self.region).observe(score)
        record.groundedness, record.ungrounded = score, bool(final.unsupported)
        if final.unsupported:
            action = self.settings.guardrail.groundedness_action
            metrics.GROUNDEDNESS_FLAGGED.labels(self.region, action).inc()
            log.warning("request answer flagged as ungrounded (score %.3f, %d unsupported sentence(s)); %s",
                        score, len(final.unsupported), action)

    # -- one chat request, at its end ----------------------------------------------------

    async def request_done(self, tenant: Tenant | None, tenant_label: str, request_id: str, model: str,
                           status: int, started: float, record: RequestRecord,
                           admission: Admission | None) -> None:
        """Count the request and write its audit record. Raises AuditUnavailable when the
        record could not be written under `audit.fail_closed` (counted as a 503)."""
        try:
            await self.audit_request(tenant, request_id, model, status, record, admission)
        except AuditUnavailable as exc:
            status = exc.status
            raise
        finally:
            metrics.REQUESTS.labels(self.region, model, tenant_label, str(status)).inc()
            metrics.REQUEST_OUTCOMES.labels(self.region, model, tenant_label, record.outcome(status)).inc()
            metrics.REQUEST_LATENCY.labels(self.region, model).observe(time.perf_counter() - started)
            if record.model_version:
                outcome = record.outcome(status)
                metrics.MODEL_VERSION_REQUESTS.labels(self.region, model, record.model_version, outcome).inc()
                if self.samples is not None and model in self.sampled_models:
                    self._spawn(self.samples.add(model, record.model_version, version_sample(record, status)))

    async def audit_request(self, tenant: Tenant | None, request_id: str, model: str, status: int,
                            record: RequestRecord, admission: Admission | None) -> None:
        """One record per chat request, on disk before the response goes out. Content is
        what the guard let through (redacted), or only a hash of a refused prompt."""
        self._observe_drift(record, status)
        if self.audit is None:
            return
        content = record.content()
        fields = {"model": model, "status": status,
                  "jurisdiction": admission.jurisdiction if admission else (tenant.jurisdiction if tenant else None),
                  **record.metadata()}
        if record.refused_prompt is not None:
            fields["prompt_hmac"] = keyed_digest(self.audit.key, record.refused_prompt)
        if content and admission is not None and not admission.may_store:
            # Processed here, but the subject's data may not be kept here: metadata only.
            fields["content_hmac"] = keyed_digest(self.audit.key, content)
            content = {}
        try:
            await self.audit.append("request", "chat.completion", tenant=tenant.id if tenant else None,
                                    request_id=request_id, subject=admission.subject if admission else None,
                                    fields=fields, content=content or None)
            self.audit_failing = False
        except (OSError, AuditIntegrityError) as exc:  # the answer is computed; its record is missing
            self.audit_failing = True
            metrics.AUDIT_WRITE_ERRORS.labels(self.region).inc()
            log.error("audit record for request %s not written: %s", request_id, exc)
            if self.settings.audit.fail_closed:
                raise AuditUnavailable() from None

    def check_audit_open(self) -> None:
        """Under `audit.fail_closed`, refuse a stream while the trail is failing: its record is
        written after the text is sent, too late to withhold it."""
        if self.audit is not None and self.settings.audit.fail_closed and self.audit_failing:
            raise AuditUnavailable()

    async def audit_admin(self, caller: Tenant | None, action: str, fields: dict) -> int | None:
        if self.audit is not None:
            return await self.audit.append("admin", action, tenant=caller.id if caller else None,
                                           fields={"by": "tenant" if caller else "operator", **fields})
        return None

    # -- drift and the trail's own health ------------------------------------------------

    def _observe_drift(self, record: RequestRecord, status: int) -> None:
        """Requests that reached the guard feed the drift detector; a due check runs in a
        thread on a snapshot, off the event loop."""
        if self.drift is None or record.guard is None:
            return
        refused = 1.0 if status == 400 and record.refused_by_guard() else 0.0
        length = float(len(record.answer)) if record.answer is not None else None
        if self.drift.add(record.embedding, refused=refused, groundedness=record.groundedness,
                          answer_length=length):
            self._spawn(self._drift_check(self.drift.snapshot()))

    async def _drift_check(self, snapshot: dict) -> None:
        alarms = await asyncio.to_thread(self.drift.evaluate, snapshot)
        for check in self.drift.last.values():
            metrics.DRIFT_P_VALUE.labels(self.region, check.signal).set(check.p_value)
            metrics.DRIFT_STATISTIC.labels(self.region, check.signal).set(check.statistic)
        for alarm in alarms:
            metrics.DRIFT_DETECTED.labels(self.region, alarm.signal).inc()
            log.warning("drift detected in region %s: %s (statistic %.4f, p %.4f)", self.region, alarm.signal,
                        alarm.statistic, alarm.p_value)
            if self.audit is not None:
                await self.audit.append("drift", "drift.detected", fields={
                    "signal": alarm.signal, "statistic": alarm.statistic, "p_value": alarm.p_value})

    def start_audit_watch(self) -> None:
        if self.audit is not None and self.settings.audit.verify_interval_s > 0:
            self._spawn(self._audit_watch())

    async def _audit_watch(self) -> None:
        from embassy.audit import verify_region

        while True:
            await asyncio.sleep(self.settings.audit.verify_interval_s)
            try:
                _, _, broken = await asyncio.to_thread(verify_region, self.settings.audit_root, self.audit.key)
            except OSError as exc:
                log.error("audit verification could not read the log: %s", exc)
                continue
            metrics.AUDIT_CHAIN_OK.labels(self.region).set(0 if broken else 1)
            for problem in broken:
                log.error("audit chain broken: %s", problem)
