"""Dagster code location of the portal: scheduled operations, dbt assets, data quality."""
