#!/usr/bin/env bash
# One command for the local demo: Dagster UI on http://127.0.0.1:3000 with an embedded SFTP partner,
# embedded S3 and Secrets Manager (moto) and SQLite storage. No AWS account, no root needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh demo
exec .venv/bin/partner-ingest demo "$@"
