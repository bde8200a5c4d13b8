"""The worker side: the llama.cpp engine, the extraction pipeline and (later) Celery tasks."""
