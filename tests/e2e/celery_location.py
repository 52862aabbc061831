"""The example project's code location with every run's steps on Celery workers
(dagster-celery's ``celery_executor``; the broker comes from the run's ``execution: config:``).
A user's project does the same with a module in its ``defs/`` folder (docs/scaling.md)."""

import dagster as dg
from dagster_celery import celery_executor

from dagster_project import location


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(location.defs(), dg.Definitions(executor=celery_executor))
