"""The lake: the dbt marts exported to Parquet, one folder per month (app/analytics/lake.py)."""
