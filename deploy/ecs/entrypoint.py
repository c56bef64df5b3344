"""Container entrypoint: write $DAGSTER_HOME/dagster.yaml from the image's template, then exec the command.

Dagster resolves ``{env: NAME}`` in its instance config, but not inside ``run_task_kwargs``, which it
hands to ECS ``RunTask`` verbatim; the run subnets and security group must be literal lists there.
The template marks them ``[$NAME]``; this fills them in from comma-separated IDs and refuses to start
when one is missing or is not a plain list of AWS resource IDs, so a misconfigured task fails at
once instead of at its first run launch. Standard library only: it runs before anything else.
"""

from __future__ import annotations

import os
import re
import string
import sys
from collections.abc import Mapping
from pathlib import Path

TEMPLATE = Path(os.environ.get("DAGSTER_INSTANCE_TEMPLATE", "/opt/dagster/dagster.yaml.template"))
_ID_LIST = re.compile(r"^[A-Za-z0-9-]+(,[A-Za-z0-9-]+)*$")


class RenderError(Exception):
    """The instance template cannot be rendered from this environment."""


def render(template: str, env: Mapping[str, str]) -> str:
    """Substitute each ``$NAME`` with the comma-separated IDs in ``env[NAME]``."""
    tmpl = string.Template(template)
    names = sorted({m.group("named") or m.group("braced") for m in tmpl.pattern.finditer(template)
                    if m.group("named") or m.group("braced")})
    missing = [name for name in names if not env.get(name)]
    if missing:
        raise RenderError(f"environment variable(s) {', '.join(missing)} not set; the instance config needs them "
                          "(set by cloudformation/services.yaml in every task definition)")
    bad = [name for name in names if not _ID_LIST.match(env[name].replace(" ", ""))]
    if bad:
        raise RenderError(f"{', '.join(bad)} must be comma-separated AWS resource IDs (e.g. subnet-0abc,subnet-0def)")
    return tmpl.substitute({name: env[name].replace(" ", "") for name in names})


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: entrypoint.py COMMAND [ARGS...]", file=sys.stderr)
        return 2
    home = Path(os.environ.get("DAGSTER_HOME", "/opt/dagster/home"))
    try:
        rendered = render(TEMPLATE.read_text(encoding="utf-8"), os.environ)
    except (OSError, RenderError) as exc:
        print(f"partner-ingest entrypoint: cannot write {home / 'dagster.yaml'}: {exc}", file=sys.stderr)
        return 78
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(rendered, encoding="utf-8")
    os.execvp(argv[1], argv[1:])  # noqa: S606 - replace this process with the service, as PID 1
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
