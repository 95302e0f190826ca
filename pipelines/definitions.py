"""The code location `workspace.yaml` loads: every area's definitions and this environment's
resources. It only assembles; the pipelines live in their folders, the resources in
pipelines/resources.py."""

from __future__ import annotations

import dagster as dg

from pipelines.orders.jobs import defs as orders
from pipelines.resources import build_resources

defs = dg.Definitions.merge(orders, dg.Definitions(resources=build_resources()))
