"""What an AWS error says, read in one place: the code of a botocore ``ClientError``.

S3 is where most of them come from, but the shape is botocore's, so the Secrets Manager read of the
SFTP resource uses the same helper.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

# head_object answers a missing key with a bare "404"; other calls name it.
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NoSuchVersion", "NotFound"})


def error_code(exc: BaseException) -> str:
    """The ``Error.Code`` of a ``ClientError``, also one wrapped by another error (s3transfer's
    ``S3UploadFailedError`` keeps it as the cause); "" when there is none."""
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code", "")
    cause = exc.__cause__ or exc.__context__
    return error_code(cause) if cause is not None else ""


def is_not_found(exc: BaseException) -> bool:
    """The key (or the version asked for) does not exist: the one refusal that means "absent"."""
    return error_code(exc) in NOT_FOUND_CODES
