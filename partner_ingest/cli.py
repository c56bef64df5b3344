"""The ``partner-ingest`` command. Thin on purpose: each subcommand parses options and delegates."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number") from None
    if not 1 <= port <= 65_535:
        raise argparse.ArgumentTypeError(f"{port} is not between 1 and 65535")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="partner-ingest",
                                     description="Land partner files from SFTP servers in S3 with Dagster.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="run the Dagster UI with a local demo partner (embedded SFTP and S3; no AWS account)",
        description="Start an embedded SFTP server with sample files, an in-memory S3 and Secrets Manager "
                    "(moto) and `dagster dev` wired to them. Ctrl-C stops everything.")
    demo.add_argument("--port", type=_port, default=3000, help="port of the Dagster UI on 127.0.0.1 (default 3000)")
    demo.add_argument("--state-dir", type=Path, default=Path(".demo"),
                      help="where partners.yaml, DAGSTER_HOME and the SFTP files live (default ./.demo)")
    demo.set_defaults(handler=_demo)
    return parser


def _demo(args: argparse.Namespace) -> int:
    try:
        from partner_ingest.demo.runner import DemoError, run_demo
    except ImportError as exc:
        if (exc.name or "").startswith("partner_ingest"):
            raise
        print(f"partner-ingest demo needs the 'demo' extra ({exc.name} is missing): "
              "pip install 'partner-ingest[demo]'", file=sys.stderr)
        return 2
    try:
        return run_demo(port=args.port, state_dir=args.state_dir)
    except DemoError as exc:
        print(f"partner-ingest demo: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
