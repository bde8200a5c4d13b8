"""Composition root: the commands (`cli.py`) and the process tree that serves (`serve.py`)."""
