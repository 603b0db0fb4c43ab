"""The science: pure modules with no Dagster imports."""
