"""One Dagster concurrency pool per partner.

A run already opens up to the partner's ``limits.max_connections`` SFTP sessions, and partners cap
sessions per login, so at most one run of a partner may land files at a time. Run tags only bind runs
that carry them (a UI launch or a backfill does not); a pool on the partner's asset binds every run,
with the limit set by the instance (``concurrency: pools: default_limit: 1``).
"""

from partner_ingest.config import PartnerConfig


def partner_pool(partner: PartnerConfig) -> str:
    """No ``/``: the UI puts pool names in its URLs."""
    return f"partner_{partner.name}"
