"""`GET /jobs/{id}`: a received message's state, attempts, reason and deliveries."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from adapter.api.context import AUTH, Context
from adapter.api.errors import ApiError
from adapter.store.deliveries import shown_delivery_state

MAX_JOB_ID = 2**63 - 1  # the store's 64-bit integer ids

router = APIRouter()


def _delivery(row: dict[str, Any]) -> dict[str, Any]:
    """One delivery of a job as the API shows it (`next_attempt` only while retrying)."""
    retrying = row["next_attempt_at"] is not None and row["state"] == "retry"
    return {
        "destination": row["target"],
        "bundle": row["bundle_id"],
        "state": shown_delivery_state(str(row["state"])),
        "attempts": row["attempts"],
        "next_attempt": row["next_attempt_at"].isoformat() if retrying else None,
        "reason": row["reason"],
    }


@router.get("/jobs/{job_id}", dependencies=AUTH)
async def job(job_id: Annotated[int, Path(ge=1, le=MAX_JOB_ID)], context: Context) -> JSONResponse:
    row = context.store.get_message(job_id)
    if row is None:
        raise ApiError(404, f"job {job_id} not found")
    return JSONResponse(
        {
            "id": row.id,
            "state": row.state,
            "attempts": row.attempts,
            "reason": row.reason,
            "received": row.received_at.isoformat(),
            "conflict": row.conflict,
            "deliveries": [_delivery(d) for d in context.store.delivery_states(job_id)],
        }
    )
