#!/usr/bin/env bash
# Installs the template linters the deploy tests call (idempotent; cheap when already installed):
#   cfn-lint  into the project venv  .venv/
#   checkov   into its own venv      .venv-checkov/  (checkov pins an old boto3 that would downgrade the project's)
# Usage (from anywhere): bash deploy/ecs/install_lint_tools.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

CFN_LINT_VERSION=$(sed -n 's/^ *"cfn-lint==\([^"]*\)",$/\1/p' pyproject.toml)   # pinned once, in the test extra
: "${CFN_LINT_VERSION:?no cfn-lint pin found in pyproject.toml}"
CHECKOV_VERSION=3.3.30
python="${PYTHON:-python3}"
pip_quiet=(--quiet --disable-pip-version-check)

if [ ! -x .venv/bin/python ]; then
  echo "install_lint_tools: .venv/ is missing; run scripts/bootstrap.sh first" >&2
  exit 1
fi
if [ "$(.venv/bin/python -m pip show cfn-lint 2>/dev/null | sed -n 's/^Version: //p')" != "$CFN_LINT_VERSION" ]; then
  .venv/bin/python -m pip install "${pip_quiet[@]}" "cfn-lint==${CFN_LINT_VERSION}"
fi

if [ ! -x .venv-checkov/bin/python ]; then
  "$python" -m venv .venv-checkov
fi
if [ "$(.venv-checkov/bin/python -m pip show checkov 2>/dev/null | sed -n 's/^Version: //p')" != "$CHECKOV_VERSION" ]; then
  .venv-checkov/bin/python -m pip install "${pip_quiet[@]}" "checkov==${CHECKOV_VERSION}"
fi

.venv/bin/cfn-lint --version
echo "checkov $(.venv-checkov/bin/checkov --version)"
