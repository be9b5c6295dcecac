"""The drain's bookkeeping (DrainFlag), without Ray: a report counts only once its replica refuses new requests."""

from __future__ import annotations

import pytest

pytest.importorskip("ray.serve")

from foclip.serve.deployment import DrainFlag  # after the skip


def test_a_report_sent_before_the_replica_knew_of_the_drain_does_not_end_it():
    flag = DrainFlag.__ray_actor_class__(replicas=1)  # the plain class behind the actor
    flag.poll("ingress", 0, False)
    flag.set()
    # A report sent before the replica learnt of the drain, arriving after it started: a request may
    # have come in since (measured under load: SIGTERM then cut off a request in flight).
    flag.poll("ingress", 0, False)
    assert not flag.idle()
    flag.poll("ingress", 1, True)  # now refusing, one request still in flight
    assert not flag.idle()
    flag.poll("ingress", 0, True)
    assert flag.idle()
