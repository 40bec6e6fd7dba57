"""Which Dagster executor runs the steps, chosen by ``LLAVA_SENSING_EXECUTOR``.

- ``in_process`` (default): every step in the run's process; the cheapest (a subprocess per step costs ~1 s and
  ~100 MiB).
- ``multiprocess``: one subprocess per step, up to the core count in parallel.
- ``k8s``: ``k8s_job_executor`` from ``dagster-k8s``: each step in its own Kubernetes job (``pip install ".[scale]"``;
  see ``deploy/helm-values.yaml``).
- ``celery``: ``celery_executor`` from ``dagster-celery``: steps go to Celery workers started with
  ``celery -A llava_sensing_pipeline.celery_app worker`` (see :mod:`~llava_sensing_pipeline.celery_app` and
  ``deploy/celery.yaml``). Its settings come from variables, read the same way by the process that runs the job and
  by the workers, so the two always agree:

  - ``LLAVA_SENSING_CELERY_BROKER``: the broker URL (``redis://host:6379/0``); required.
  - ``LLAVA_SENSING_CELERY_BACKEND``: where results go; default the broker for a Redis broker, else ``rpc://``.
  - ``LLAVA_SENSING_CELERY_VISIBILITY_TIMEOUT``: seconds (default 3600). A task is acknowledged only once its step
    has finished (``task_acks_late``), so a step whose worker dies (killed, its machine lost) is handed to another
    worker once the broker has not heard back for this long; it must exceed the longest step, or a step still
    running is started a second time elsewhere.
"""

from __future__ import annotations

import os

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

EXECUTORS = ("in_process", "multiprocess", "k8s", "celery")
DEFAULT_VISIBILITY_TIMEOUT_S = 3600.0
CELERY_POLL_S = 0.25


def celery_config(env: dict[str, str] | None = None) -> dict:
    """The ``celery_executor`` config (broker, backend, Celery settings) from the ``LLAVA_SENSING_CELERY_*``
    variables: the same for the run's process, which sends the steps, and the workers, which run them."""
    env = os.environ if env is None else env
    broker = (env.get("LLAVA_SENSING_CELERY_BROKER") or "").strip()
    if not broker:
        raise ValueError("LLAVA_SENSING_EXECUTOR=celery needs the broker: set LLAVA_SENSING_CELERY_BROKER, "
                         "e.g. redis://localhost:6379/0")
    backend = (env.get("LLAVA_SENSING_CELERY_BACKEND") or "").strip()
    if not backend:
        backend = broker if broker.startswith(("redis://", "rediss://")) else "rpc://"
    visibility = float(env.get("LLAVA_SENSING_CELERY_VISIBILITY_TIMEOUT") or DEFAULT_VISIBILITY_TIMEOUT_S)
    if not visibility > 0:
        raise ValueError(f"LLAVA_SENSING_CELERY_VISIBILITY_TIMEOUT must be a number of seconds above 0, got {visibility}")
    return {
        "broker": broker,
        "backend": backend,
        "config_source": {
            # A step's task is acknowledged when the step has finished, not when a worker takes it: a worker that
            # dies mid-step (SIGKILL, OOM, a lost machine) leaves it unacknowledged and the broker hands it to
            # another worker, where the step runs again from its start.
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,  # a pool process killed under a live worker: requeued at once
            "worker_prefetch_multiplier": 1,  # a worker holds only the steps it runs
            "broker_transport_options": {
                "visibility_timeout": visibility,  # Redis: an unacknowledged task is redelivered after this
                "unacked_restore_interval": max(1, min(10, int(visibility // 5))),
                "unacked_restore_throttle": 1,
                # dagster-celery's defaults for connection retries
                "max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,
            },
        },
    }


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
            from dagster_celery import celery_executor, core_execution_loop
        except ImportError:
            raise ImportError(f"LLAVA_SENSING_EXECUTOR={name} needs dagster-{name}: pip install -e \".[scale]\"") from None
        # The run's process polls its steps' results every TICK_SECONDS (1 s in dagster-celery), which a chain of
        # short steps waits on after each step; a Redis lookup per running step is cheap enough to do 4 times a second.
        core_execution_loop.TICK_SECONDS = CELERY_POLL_S
        return celery_executor.configured(celery_config(env), name="celery")
    raise ValueError(f"LLAVA_SENSING_EXECUTOR={name!r} is not one of {', '.join(EXECUTORS)}")
