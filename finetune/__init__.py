"""Fine-tuning and distillation jobs (Celery workers, tracked in SQL)."""
