"""Analytics: the dbt models as assets (schedule and source-change sensor) and the data
quality suites as asset checks."""
