"""Task2Vec diversity coefficient of text corpora as Dagster assets."""
