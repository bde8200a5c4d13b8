"""The worker side: the one use case (`process`), the rules stage (`rules_stage`) and the LLM
stage (`llm_stage`) with their engines, delivery, and the Celery tasks (`tasks`)."""
