"""The code location `workspace.yaml` loads: every area's definitions and this environment's
resources. It only assembles; the pipelines live in their folders, the resources in
pipelines/resources.py. (Dagster refuses a second Definitions object at module scope, so the
areas are imported as modules.)"""

from __future__ import annotations

import dagster as dg

from app.models.status import LogSource
from app.system_logs.handler import install as install_system_log
from pipelines.analytics import models as analytics
from pipelines.analytics import quality
from pipelines.inventory import jobs as inventory
from pipelines.lake import assets as lake
from pipelines.orders import jobs as orders
from pipelines.payments import jobs as payments
from pipelines.pharmacy import jobs as pharmacy
from pipelines.resources import build_resources

# Each process that loads the pipelines (code server, run workers) keeps its warnings and
# errors in the system log, when DATABASE_URL names the portal's database.
install_system_log(LogSource.PIPELINES)

defs = dg.Definitions.merge(
    orders.defs,
    inventory.defs,
    payments.defs,
    pharmacy.defs,
    analytics.defs,
    quality.defs,
    lake.defs,
    # Runs execute in their run worker's process: one Python process per run, not one more
    # per step (the jobs are small; a 2-core machine feels every process that loads them).
    dg.Definitions(resources=build_resources(), executor=dg.in_process_executor),
)
