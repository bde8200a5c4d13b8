"""Edges and state: settings, store, queue, MLLP, the HTTP API (`adapter.api`, one router per
area) and the browser UI (`adapter.ui`). The CLI is `app` (the composition root)."""
