"""Where the repository's own files are, for tests wherever they sit in the tree."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_PARTNERS = REPO_ROOT / "partners.example.yaml"
DEPLOY = REPO_ROOT / "deploy" / "ecs"
