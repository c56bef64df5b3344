"""Read a landed object back and compare it with what was read from the partner.

S3 (and moto) accept wrong client checksums silently and multipart objects only carry S3's
composite checksum, so the check streams the current object under the key and hashes it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from botocore.exceptions import ClientError

from partner_ingest.s3.errors import error_code


def verify_object(s3: Any, *, bucket: str, key: str, size: int, sha256: str, version_id: str | None = None
                  ) -> tuple[bool, str, dict[str, Any]]:
    """(passed, description, metadata) for the object currently under ``key``.

    With ``version_id`` (the version the landing created) the current object must also be that
    version: what users reach under the key is what was verified, not a later writer's bytes.
    """
    try:
        body = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        return False, (f"s3://{bucket}/{key} cannot be read ({error_code(exc)}): it was deleted or access was "
                       "removed"), {}
    current = body.get("VersionId")
    digest = hashlib.sha256()
    count = 0
    for chunk in body["Body"].iter_chunks(1024 * 1024):
        digest.update(chunk)
        count += len(chunk)
    metadata = {"size_found": count, "sha256_found": digest.hexdigest(), "s3_version_id": current or ""}
    if version_id and current and current != version_id:
        return False, (f"s3://{bucket}/{key} holds {count} bytes with sha256 {digest.hexdigest()} as version "
                       f"{current}, not version {version_id} that was landed and verified: something else wrote "
                       "to the key"), metadata
    if count != size or digest.hexdigest() != sha256:
        return False, (f"s3://{bucket}/{key} holds {count} bytes with sha256 {digest.hexdigest()}, "
                       f"but {size} bytes with sha256 {sha256} were landed"), metadata
    return True, f"s3://{bucket}/{key} matches the {size} bytes read from the partner", metadata
