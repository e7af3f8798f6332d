"""The fake Anthropic upstream: a Messages API server that answers from scripts.

See docs/fake-upstream.md for the directives, the admin endpoints and the token rule.
"""

from app.devtools.fake_upstream.inprocess import (
    FakeUpstreamHandle,
    fake_upstream_task,
    running_fake_upstream,
    serve,
)
from app.devtools.fake_upstream.script import PlanError, ReplyPlan
from app.devtools.fake_upstream.server import FakeUpstreamApp
from app.devtools.fake_upstream.state import FakeUpstreamConfig

__all__ = [
    "FakeUpstreamApp",
    "FakeUpstreamConfig",
    "FakeUpstreamHandle",
    "PlanError",
    "ReplyPlan",
    "fake_upstream_task",
    "running_fake_upstream",
    "serve",
]
