"""The Dagster glue: partners become assets, partitions, sensors and checks."""
