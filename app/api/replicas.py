"""The live replicas, for operators (guarded like `/metrics`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.api.deps import StateDep, metrics_reader
from app.api.schemas import ReplicaOut, ReplicaPage
from app.errors import AppError

router = APIRouter(tags=["operators"])


@router.get("/replicas", dependencies=[Depends(metrics_reader)])
async def list_replicas(state: StateDep) -> ReplicaPage:
    """Every live replica (heard from within three periods): its running turns, warm CLI
    clients, whether it drains, and how long ago it announced itself (replicas announce every
    `COPILOT_REAP_INTERVAL_S`). Needs COPILOT_METRICS_TOKEN as a bearer token when one is set.
    """
    if state.turns is None or state.turns.reaper.interval_s <= 0:
        raise AppError(
            "replicas announce themselves every COPILOT_REAP_INTERVAL_S, which is 0 here",
            code="replicas_unknown",
            status=503,
        )
    reaper = state.turns.reaper
    reports = await reaper.directory.live(reaper.stale_s)
    return ReplicaPage(
        this_replica=reaper.replica_id,
        replicas=[ReplicaOut.model_validate(report) for report in reports],
    )
