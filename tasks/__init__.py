"""The experiment platform: store (SQLModel + Alembic), Celery app and tasks, service API, broker, CLI.

store.py (tables, engines, init_db) - migrate.py + migrations/ (Alembic) - celery_app.py (make_celery)
- jobs.py (the tasks) - runstate.py (claim/finish transitions) - callbacks.py (DBCallback) - api.py
(submit/cancel/retry/read) - recovery.py (workers re-queue runs whose worker died) - broker.py
(embedded Redis) - cli.py (igat worker/up/submit/runs).
"""
