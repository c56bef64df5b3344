"""The ``partner-ingest`` command. Thin on purpose: each subcommand parses options and delegates."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

PORT = click.IntRange(1, 65_535)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Land partner files from SFTP servers in S3 with Dagster."""


@cli.command()
@click.argument("host")
@click.option("--port", type=PORT, default=22, show_default=True, help="the server's SSH port")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="seconds to wait for the TCP connection and each SSH handshake")
def keyscan(host: str, port: int, timeout: float) -> None:
    """Print HOST's SSH host keys as partners.yaml host_keys lines, with their SHA256 fingerprints.

    Connects without authenticating, once per key type (as ssh-keyscan does).
    """
    from partner_ingest.operator_check import PIN_ADVICE, KeyscanError, key_line, scan_host_keys

    try:
        keys = scan_host_keys(host, port, timeout)
    except KeyscanError as exc:
        click.echo(f"partner-ingest keyscan: {exc}", err=True)
        sys.exit(1)
    click.echo("host_keys:")
    for key_type, blob in keys:
        click.echo(f"  {key_line(key_type, blob)}")
    click.echo(PIN_ADVICE)


@cli.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
def validate(file: Path | None) -> None:
    """Validate partners.yaml (FILE, default $PARTNER_INGEST_CONFIG or ./partners.yaml); no network."""
    from partner_ingest.config import config_path, load_config
    from partner_ingest.errors import ConfigError

    path = file if file is not None else config_path()
    try:
        config = load_config(path)
    except ConfigError as exc:
        click.echo(f"{path}: {exc}", err=True)
        sys.exit(1)
    click.echo(f"{path}: {len(config.partners)} partners OK")


def _partners_and_source(demo_help: str):
    """PARTNERS, --config, and --demo/--state-dir (the running local demo instead of partners.yaml)."""
    def decorate(command):
        for option in reversed((
            click.argument("partners", nargs=-1),
            click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                         help="partners.yaml to read (default $PARTNER_INGEST_CONFIG or ./partners.yaml)"),
            click.option("--demo", is_flag=True, help=f"{demo_help} (see --state-dir)"),
            click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".demo"),
                         show_default=True, help="with --demo: the demo's state directory"),
        )):
            command = option(command)
        return command
    return decorate


@cli.command()
@_partners_and_source("check the running local demo's partner")
def check(partners: tuple[str, ...], config_file: Path | None, demo: bool, state_dir: Path) -> None:
    """Check PARTNERS (all when none are named) before their first run.

    Per partner, in order: config OK, secret found, TCP reachable, host key matches the pin,
    authentication OK, remote directory readable, server capabilities (largest read answered, size and
    mtime in the listing, whether directory mtimes follow their files), files matching the globs (count,
    bytes, how many not yet landed in S3). A partner stops at its first failure, whose line says what to
    do; the exit code is 1 if any partner failed. Never prints a secret.
    """
    from partner_ingest.operator_check import check as run_check

    if demo:
        import os

        from partner_ingest.demo.object_store import demo_aws_environment
        from partner_ingest.errors import ConfigError
        from partner_ingest.landed_listing import running_demo
        try:
            config_file, endpoint_url = running_demo(state_dir)
        except ConfigError as exc:
            click.echo(f"partner-ingest check: {exc}", err=True)
            sys.exit(1)
        environment = demo_aws_environment(os.environ, endpoint_url)   # boto3 reads it: this process only
        for name in [name for name in os.environ if name not in environment]:
            del os.environ[name]
        os.environ.update(environment)
    failed = False
    for step in run_check(partners, config_file):
        mark = "ok  " if step.ok else "FAIL"
        who = f"{step.partner}: " if step.partner else ""
        click.echo(f"{mark} {who}{step.name}: {step.detail}")
        failed = failed or not step.ok
    if failed:
        sys.exit(1)


@cli.command()
@_partners_and_source("list the running local demo's bucket")
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True,
              help="at most this many objects per partner")
def landed(partners: tuple[str, ...], config_file: Path | None, demo: bool, state_dir: Path, limit: int) -> None:
    """List what landed for PARTNERS (all when none): S3 key, size, time and the sha256 tag.

    Reads the landing bucket with boto3 from the standard AWS environment (AWS_ENDPOINT_URL, region,
    credentials); no AWS CLI needed. Never reads the partner's server.
    """
    from partner_ingest.errors import PartnerIngestError
    from partner_ingest.landed_listing import demo_config_and_client, landed_objects

    try:
        if demo:
            config, s3 = demo_config_and_client(state_dir)
        else:
            import boto3

            from partner_ingest.config import load_config
            config, s3 = load_config(config_file), boto3.client("s3")
        count = 0
        for item in landed_objects(config, s3, partners, limit):
            count += 1
            stamp = item.last_modified.strftime("%Y-%m-%d %H:%M:%S")
            click.echo(f"{stamp}  {item.size:>12}  sha256 {item.sha256 or '(no tag)':<64}  "
                       f"s3://{config.landing.bucket}/{item.key}")
    except PartnerIngestError as exc:
        click.echo(f"partner-ingest landed: {exc}", err=True)
        sys.exit(1)
    click.echo(f"{count} object(s) in s3://{config.landing.bucket}")


@cli.command()
@click.option("--port", type=PORT, default=3000, show_default=True, help="port of the Dagster UI on 127.0.0.1")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".demo"),
              show_default=True, help="where partners.yaml, DAGSTER_HOME and the SFTP files live")
def demo(port: int, state_dir: Path) -> None:
    """Run the Dagster UI with a local demo partner (embedded SFTP and S3; no AWS account).

    Starts an embedded SFTP server with sample files, an in-memory S3 and Secrets Manager (moto) and
    `dagster dev` wired to them. Ctrl-C stops everything.
    """
    try:
        from partner_ingest.demo.runner import DemoError, run_demo
    except ImportError as exc:
        if (exc.name or "").startswith("partner_ingest"):
            raise
        click.echo(f"partner-ingest demo needs the 'demo' extra ({exc.name} is missing): "
                   "pip install 'partner-ingest[demo]'", err=True)
        sys.exit(2)
    try:
        sys.exit(run_demo(port=port, state_dir=state_dir))
    except DemoError as exc:
        click.echo(f"partner-ingest demo: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="partner-ingest")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
