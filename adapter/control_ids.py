"""MSH-10 of the ACKs radbridge sends: one generator per serving process, for MLLP and HTTP.

`ControlIds.reserve(store)` takes the next number of `ack_generations` from the store (one row
per start) and counts from there: `RB<generation>.<n>`. Every ACK of one `radbridge serve`,
over MLLP or `POST /hl7v2`, comes from the same counter, and a restart (or a second process on
the same store) gets a new generation, so no two ACKs share an MSH-10. At most 20 characters
(MSH-10 is ST(20) before v2.7) until a generation has sent 10^10 ACKs.

The counter is an `itertools.count`: `next()` on it is atomic in CPython, so the event loop and
worker threads may draw from it at once. Application ACKs (MSH-16, sent by the worker) are
`RBAPP<message id>`: another namespace.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from adapter.store import Store
from adapter.tables import ack_generations


class ControlIds:
    """Draws the MSH-10 of each ACK: `RB<generation>.<n>`, n from 1."""

    def __init__(self, generation: int) -> None:
        self.prefix = f"RB{generation}."
        self._numbers = itertools.count(1)

    @classmethod
    def reserve(cls, store: Store) -> ControlIds:
        """A generator with a generation no other start on this store had (one INSERT)."""
        with store.transaction() as connection:
            inserted = connection.execute(
                ack_generations.insert().values(started_at=datetime.now(UTC))
            ).inserted_primary_key
            assert inserted is not None  # an INSERT of one row with an autoincrement key
            generation = int(inserted[0])
        return cls(generation)

    def __call__(self) -> str:
        """The next control id."""
        return f"{self.prefix}{next(self._numbers)}"
