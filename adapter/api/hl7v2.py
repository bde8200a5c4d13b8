"""HL7v2 over HTTP: `POST /hl7v2` takes one ER7 message and answers its ACK (200 AA/CA, 400
AR/CR, 503 AE/CE; 204 when an enhanced-mode sender asked for no commit ACK)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from adapter.api.context import AUTH, Context, RequestBody
from mappings.hl7.ack import Disposition, classify_ack
from mappings.media_types import HL7_ER7

router = APIRouter()
_ACK_STATUS = {Disposition.ACCEPTED: 200, Disposition.REJECTED: 400, Disposition.ERROR: 503}


@router.post("/hl7v2", dependencies=AUTH, response_class=Response)
async def post_hl7v2(body: RequestBody, context: Context) -> Response:
    context.counters["received"] += 1
    ack = await context.ingest.handle_message(
        body.replace(b"\r\n", b"\r").replace(b"\n", b"\r").strip()
    )
    if ack is None:
        return Response(status_code=204)
    status = _ACK_STATUS[classify_ack(ack)[0]]
    context.counters["acked" if status == 200 else "rejected"] += 1
    return Response(ack, status_code=status, media_type=HL7_ER7)
