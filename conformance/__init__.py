"""Proving radbridge speaks the standards: validation, replay, evaluation."""
