"""Which Dagster executor runs the steps, chosen by ``LLAVA_SENSING_EXECUTOR``.

- ``in_process`` (default): every step in the run's process; the cheapest (a subprocess per step costs ~1 s and
  ~100 MiB).
- ``multiprocess``: one subprocess per step, up to the core count in parallel.
- ``k8s``: ``k8s_job_executor`` from ``dagster-k8s``: each step in its own Kubernetes job (``pip install ".[scale]"``;
  see ``deploy/helm-values.yaml``).
- ``celery``: ``celery_executor`` from ``dagster-celery``: steps go to Celery workers (see ``deploy/celery.yaml``).
"""

from __future__ import annotations

import os

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

EXECUTORS = ("in_process", "multiprocess", "k8s", "celery")


def executor_from_env(env: dict[str, str] | None = None) -> ExecutorDefinition:
    env = os.environ if env is None else env
    name = (env.get("LLAVA_SENSING_EXECUTOR") or "in_process").strip().lower()
    if name == "in_process":
        return in_process_executor
    if name == "multiprocess":
        return multiprocess_executor
    if name in ("k8s", "celery"):
        try:
            if name == "k8s":
                from dagster_k8s import k8s_job_executor

                return k8s_job_executor
            from dagster_celery import celery_executor

            return celery_executor
        except ImportError:
            raise ImportError(f"LLAVA_SENSING_EXECUTOR={name} needs dagster-{name}: pip install -e \".[scale]\"") from None
    raise ValueError(f"LLAVA_SENSING_EXECUTOR={name!r} is not one of {', '.join(EXECUTORS)}")
