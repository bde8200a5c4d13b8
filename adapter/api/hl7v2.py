"""HL7v2 over HTTP: `POST /hl7v2` takes one ER7 message and answers its ACK (200 AA/CA, 400
AR/CR, 503 AE/CE; 204 when an enhanced-mode sender asked for no commit ACK)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from adapter.api.context import AUTH, Context, RequestBody
from mappings.ack import read_ack_code
from mappings.media_types import HL7_ER7

router = APIRouter()


@router.post("/hl7v2", dependencies=AUTH, response_class=Response)
async def post_hl7v2(body: RequestBody, context: Context) -> Response:
    context.counters["received"] += 1
    ack = await context.ingest.handle_message(
        body.replace(b"\r\n", b"\r").replace(b"\n", b"\r").strip()
    )
    if ack is None:
        return Response(status_code=204)
    code = read_ack_code(ack) or "AE"
    status = 200 if code in ("AA", "CA") else 400 if code in ("AR", "CR") else 503
    context.counters["acked" if status == 200 else "rejected"] += 1
    return Response(ack, status_code=status, media_type=HL7_ER7)
