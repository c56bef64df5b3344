"""``dagster dev`` for the demo, without the one warning a demo user cannot act on.

Dagster 1.13 marks ``dagster dev`` superseded by ``dg dev`` and warns at every start. The demo keeps
``dagster dev`` on purpose: it takes the definitions module and the demo's own ``DAGSTER_HOME`` directly,
exactly what ``workspace.yaml`` and the ECS code server load, while ``dg dev`` would add its project
resolution on top. Only that supersession warning is silenced; every other warning still shows.
"""

from __future__ import annotations

import warnings

from dagster_shared.utils.warnings import SupersessionWarning


def main() -> None:
    warnings.filterwarnings("ignore", category=SupersessionWarning, message=r".*dg dev")
    from dagster._cli import main as dagster_main

    dagster_main()


if __name__ == "__main__":
    main()
