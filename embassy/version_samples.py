"""Per-request samples of each model version while a canary runs, kept in the region's
Redis (one capped stream per model version), so that every ingress replica adds to the
same record and `embassy models` judges all of them together (embassy/canary.py)."""

from __future__ import annotations

import logging

from embassy.canary import Sample

log = logging.getLogger("embassy.rollout")


def stream_key(region: str, model: str, version: str) -> str:
    return f"embassy:{region}:rollout:{model}:{version}"


class SampleLog:
    def __init__(self, redis_url: str, region: str, window: int) -> None:
        from redis.asyncio import Redis

        self.client = Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.region, self.window = region, window

    async def add(self, model: str, version: str, sample: Sample) -> None:
        """Best effort: a lost sample delays a verdict, it never fails a request."""
        try:
            await self.client.xadd(stream_key(self.region, model, version), sample.to_fields(),
                                   maxlen=self.window, approximate=True)
        except Exception:
            log.warning("could not record a rollout sample for %s@%s", model, version, exc_info=True)


def read_samples(redis_url: str, region: str, model: str, version: str, since: str = "-") -> list[Sample]:
    """The version's samples after stream id `since` (`-`: all kept)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    rows = client.xrange(stream_key(region, model, version), min=since if since == "-" else f"({since}")
    return [Sample.from_fields({k.decode(): v.decode() for k, v in fields.items()}) for _, fields in rows]


def last_id(redis_url: str, region: str, model: str, version: str) -> str:
    """The newest sample's stream id ("0-0" when none): a step's samples start after it."""
    import redis

    rows = redis.Redis.from_url(redis_url, socket_timeout=5).xrevrange(stream_key(region, model, version),
                                                                       count=1)
    return rows[0][0].decode() if rows else "0-0"


def clear(redis_url: str, region: str, model: str, versions: list[str]) -> None:
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    client.delete(*[stream_key(region, model, v) for v in versions])
