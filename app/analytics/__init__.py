"""The analytics lake: the marts as Parquet files, and DuckDB over them (`portal analytics`)."""
