"""The Celery app of the workers of ``LLAVA_SENSING_EXECUTOR=celery``: dagster-celery's step task on a Celery app
configured from the same ``LLAVA_SENSING_CELERY_*`` variables as the executor
(:func:`~llava_sensing_pipeline.executors.celery_config`), so the workers listen where the runs send their steps and
acknowledge them the same way. Start a worker with::

    celery -A llava_sensing_pipeline.celery_app worker -Q dagster --concurrency 1 -n worker1@%h

A worker needs this package installed, the ``LLAVA_SENSING_CELERY_*`` variables, the instance's database variables
(``DAGSTER_PG_*``, as ``deploy/dagster-postgres.yaml`` reads them) and the mounts every step reads or writes
(corpus, per-partition storage, exports). The pipeline's settings come with each step from the run that sent it.
"""

from __future__ import annotations

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from . import definitions  # noqa: F401  (imported once here, the pool processes forked from this one have it)
from .executors import celery_config
from .settings import effective_env

app = make_app(CeleryExecutor.for_cli(**celery_config(effective_env())).app_args())

execute_plan = create_task(app)
