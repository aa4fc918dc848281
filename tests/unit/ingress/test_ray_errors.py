"""Ray's exception wrappers become the graph's own errors (no Ray cluster needed)."""

from __future__ import annotations

import pickle

from ray.exceptions import ActorDiedError, RayTaskError
from ray.serve.exceptions import BackPressureError

from deployments.ingress.deployment import translate_ray_error
from embassy.errors import ContextLengthExceeded, Overloaded, ServiceUnavailable


def test_embassy_errors_survive_pickling_with_every_field():
    err = Overloaded("full", retry_after_s=3)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is Overloaded and back.headers == {"retry-after": "3"} and back.status == 429


def test_node_error_wrapped_by_ray_is_unwrapped():
    cause = ContextLengthExceeded("too long", param="messages")
    wrapped = RayTaskError("generate", "Traceback ... /srv/secret.py", cause).as_instanceof_cause()
    out = translate_ray_error(wrapped)
    assert out is cause and out.param == "messages" and out.status == 400


def test_full_llm_queue_is_429():
    out = translate_ray_error(BackPressureError(num_queued_requests=64, max_queued_requests=64))
    assert isinstance(out, Overloaded) and out.status == 429 and "retry-after" in out.headers


def test_dead_replica_is_503():
    out = translate_ray_error(ActorDiedError())
    assert isinstance(out, ServiceUnavailable) and out.status == 503


def test_unknown_errors_pass_through_for_the_generic_500():
    err = KeyError("x")
    assert translate_ray_error(err) is err
