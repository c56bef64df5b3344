"""The ingestion core, without Dagster: one file's transfer, a run's pipeline, a tick's plan, partition
keys, selection rules, identities, after-landing actions, archive expansion."""
