"""Data quality suites (great-expectations) on the portal's tables (`raw_*`) and on the dbt
marts (`marts_*`): `SUITES` names them, `validate(suite, database_url)` runs one."""

from pipelines.quality.runner import QualityOutcome, validate
from pipelines.quality.suites import SUITES, Suite

__all__ = ["SUITES", "QualityOutcome", "Suite", "validate"]
