"""The durable store: messages, extractions, Bundles, Observations for pull, deliveries, audit.

`Store` is the one façade (`from adapter.store import Store`); its parts, one module per
concern, share one database (`connection`: the engine, migrations, transactions):

- `messages`: ingest (duplicates, MSH-10 conflicts, the ACK sent), the state machine, dead
  letters, the message's reads, and its types (`Incoming`, `MessageRow`, the states);
- `results`: extraction records and results (Bundles, the index rows of their resources, each
  resource's versions) in result order (`mappings.result_order`), with `reextraction` (a
  reviewer's decisions across a re-extraction);
- `search`: reads of stored resources for pull and the timeline's lookup;
- `deliveries`: one record per Bundle and destination, the message's `delivered` state;
- `audit`: the audit trail.

Clinician review and the console's reads are `adapter.reviews`; the FHIR API's history and
`_include` reads are `adapter.fhir_queries` (both in a `Store.transaction`).
"""

from __future__ import annotations

from adapter.store.audit import AuditStore
from adapter.store.deliveries import DeliveryStore
from adapter.store.messages import MessageStore
from adapter.store.results import ResultStore
from adapter.store.search import SearchStore

__all__ = ["Store"]


class Store(MessageStore, ResultStore, SearchStore, DeliveryStore, AuditStore):
    """The store. Thread-safe: every call takes its own connection from the pool."""
