"""Market data: the Parquet/DuckDB lake, data quality checks, and the sources that fill the lake."""
