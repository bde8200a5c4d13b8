"""Composition root: the commands (`cli.py` registers those of `app.commands`, one module per
command group) and the process tree that serves (`serve.py`)."""
