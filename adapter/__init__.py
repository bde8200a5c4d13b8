"""Edges and state: settings, store, queue, MLLP, HTTP API and the CLI (composition root)."""
