"""README.md against the code (no servers): the Troubleshooting table, the commands, the variables.

* Every error class a user can meet has a row in "Troubleshooting": each ``PartnerIngestError``
  subclass (found by introspecting ``partner_ingest.errors``, so a new class fails here until it is
  documented), ``KeyscanError`` and ``ConfigError``.
* Every message fragment a row quotes (the code spans of its first column) is still written in
  ``partner_ingest/``: in a ``.py`` file's text and inside a string literal there.
* Every ``partner-ingest <subcommand>`` in the README's code is a command of ``partner_ingest.cli.cli``
  (and its ``--options`` are that command's); every ``PARTNER_INGEST_*``, ``DAGSTER_*`` and ``AWS_*``
  name appears in the code or configuration under ``partner_ingest/``, ``scripts/`` or ``deploy/``, or
  is a standard AWS/Dagster variable on the allow-list below.
"""

from __future__ import annotations

import ast
import inspect
import re
from functools import cache
from pathlib import Path

import click
import pytest

from partner_ingest import errors
from partner_ingest.cli import cli
from partner_ingest.operator_check import KeyscanError

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PACKAGE = ROOT / "partner_ingest"
TROUBLESHOOTING = "Troubleshooting"
MIN_FRAGMENT = 15

# Standard variables boto3 or Dagster read themselves; the README may name them without our code doing so.
STANDARD_VARIABLES = frozenset({
    "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "DAGSTER_HOME",
})

ENV_NAME = re.compile(r"\b(?:PARTNER_INGEST|DAGSTER|AWS)_[A-Z0-9_]*[A-Z0-9]\b")
SUBCOMMAND = re.compile(r"(?<![\w-])partner-ingest[ \t]+([a-z][a-z0-9_-]*)([^\n#]*)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
CODE_SPAN = re.compile(r"`([^`\n]+)`")


def readme() -> str:
    return README.read_text(encoding="utf-8")


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", readme(), re.S | re.M)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


@cache
def troubleshooting_rows() -> tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...]:
    """(message fragments, error classes, the row) for each row of the Troubleshooting table."""
    lines = [line for line in section(TROUBLESHOOTING).splitlines() if line.startswith("|")]
    assert len(lines) > 2, "the Troubleshooting section has no table"
    rows = []
    for line in lines[2:]:  # the header and the --- line
        cells = _cells(line)
        assert len(cells) == 4, f"a Troubleshooting row needs 4 cells (message, error, cause, fix): {line}"
        fragments = tuple(CODE_SPAN.findall(cells[0]))
        classes = tuple(CODE_SPAN.findall(cells[1]))
        rows.append((fragments, classes, line))
    return tuple(rows)


@cache
def sources() -> dict[Path, str]:
    return {path: path.read_text(encoding="utf-8") for path in sorted(PACKAGE.rglob("*.py"))}


@cache
def string_literals() -> tuple[str, ...]:
    """Every str constant in partner_ingest/, f-strings' literal parts included."""
    found = []
    for text in sources().values():
        found.extend(node.value for node in ast.walk(ast.parse(text))
                     if isinstance(node, ast.Constant) and isinstance(node.value, str))
    return tuple(found)


def required_classes() -> set[str]:
    """Every typed error of partner_ingest.errors (introspected), plus KeyscanError and ConfigError."""
    typed = {cls.__name__ for _, cls in inspect.getmembers(errors, inspect.isclass)
             if cls.__module__ == errors.__name__ and issubclass(cls, errors.PartnerIngestError)
             and cls is not errors.PartnerIngestError}
    return typed | {KeyscanError.__name__, errors.ConfigError.__name__}


def code_in_readme() -> list[str]:
    """The README's fenced blocks and inline code spans (outside the blocks)."""
    text = readme()
    blocks = FENCE.findall(text)
    return blocks + CODE_SPAN.findall(FENCE.sub("", text))


def subcommand_mentions() -> dict[str, set[str]]:
    """``partner-ingest <name>`` in the README's code → the ``--options`` written after it."""
    mentions: dict[str, set[str]] = {}
    for code in code_in_readme():
        for name, rest in SUBCOMMAND.findall(code):
            mentions.setdefault(name, set()).update(re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", rest))
    return mentions


def test_every_error_class_has_a_troubleshooting_entry():
    documented = {name for _, classes, _ in troubleshooting_rows() for name in classes}
    missing = sorted(required_classes() - documented)
    assert not missing, f"README.md's Troubleshooting has no row for {', '.join(missing)}"


def test_every_troubleshooting_row_names_real_error_classes_and_quotes_the_message():
    defined = {m.group(1) for text in sources().values() for m in re.finditer(r"^class (\w+)\(", text, re.M)}
    for fragments, classes, line in troubleshooting_rows():
        assert classes, f"a Troubleshooting row names no error class in backticks: {line}"
        assert fragments, f"a Troubleshooting row quotes no message fragment: {line}"
        unknown = [name for name in classes if name not in defined]
        assert not unknown, f"{unknown} are not classes in partner_ingest/: {line}"
        short = [f for f in fragments if len(f) < MIN_FRAGMENT]
        assert not short, f"fragments under {MIN_FRAGMENT} characters prove little: {short} in {line}"


@pytest.mark.parametrize("fragment", sorted({f for fragments, _, _ in troubleshooting_rows() for f in fragments}))
def test_every_quoted_message_fragment_is_in_the_code(fragment):
    in_text = [path.relative_to(ROOT) for path, text in sources().items() if fragment in text]
    assert in_text, f"README.md quotes {fragment!r}, which no file in partner_ingest/ holds any more"
    assert any(fragment in literal for literal in string_literals()), (
        f"{fragment!r} is in {in_text} but in no string literal there (a comment or a name is no message)")


@pytest.mark.parametrize("name", sorted(subcommand_mentions()))
def test_every_subcommand_the_readme_mentions_exists(name):
    command = cli.commands.get(name)
    assert command is not None, (f"README.md mentions `partner-ingest {name}`, but the CLI has only "
                                 f"{', '.join(sorted(cli.commands))}")
    options = {opt for param in command.params if isinstance(param, click.Option)
               for opt in (*param.opts, *param.secondary_opts)} | {"--help"}
    unknown = sorted(subcommand_mentions()[name] - options)
    assert not unknown, f"README.md passes {unknown} to `partner-ingest {name}`, which takes {sorted(options)}"


def test_every_cli_command_is_in_the_readme():
    undocumented = sorted(set(cli.commands) - set(subcommand_mentions()))
    assert not undocumented, f"README.md never shows `partner-ingest {undocumented[0]}` (all: {undocumented})"


def test_every_environment_variable_the_readme_names_is_used_or_standard():
    used: set[str] = set()
    for top in ("partner_ingest", "scripts", "deploy"):
        for path in (ROOT / top).rglob("*"):
            if path.is_file() and path.suffix != ".md" and "__pycache__" not in path.parts:
                try:
                    used.update(ENV_NAME.findall(path.read_text(encoding="utf-8")))
                except UnicodeDecodeError:
                    continue
    named = set(ENV_NAME.findall(readme()))
    assert named, "README.md names no environment variable: the pattern is broken"
    unknown = sorted(named - used - STANDARD_VARIABLES)
    assert not unknown, (f"README.md names {unknown}, which nothing under partner_ingest/, scripts/ or deploy/ "
                         "reads and which is not on the standard allow-list")
