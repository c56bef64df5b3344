"""Partner credentials from a Secrets Manager secret string.

The secret is JSON with ``password`` and/or ``private_key`` (OpenSSH or PEM; RSA, ECDSA or Ed25519),
optionally ``passphrase``. Values never enter an error message, a log line or ``repr``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import paramiko

from partner_ingest.errors import SecretError

_KEY_CLASSES = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


@dataclass(frozen=True)
class SftpCredentials:
    """What the partner's SFTP server authenticates us with; ``repr`` shows only which kinds exist."""

    password: str | None = field(default=None, repr=False)
    private_key: paramiko.PKey | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        kinds = [k for k, v in (("password", self.password), ("private_key", self.private_key)) if v]
        return f"SftpCredentials({', '.join(kinds) or 'none'})"

    @property
    def description(self) -> str:
        if self.private_key is not None:
            return f"{self.private_key.get_name()} private key" + (" and password" if self.password else "")
        return "password"


def credentials_from_secret(partner: str, secret_id: str, secret_string: str | None) -> SftpCredentials:
    fix = f"store JSON like {{\"password\": \"...\"}} or {{\"private_key\": \"...\"}} in secret '{secret_id}'"
    if not secret_string:
        raise SecretError(f"secret '{secret_id}' has no SecretString", partner=partner, action=fix)
    try:
        payload = json.loads(secret_string)
    except ValueError:
        raise SecretError(f"secret '{secret_id}' is not a JSON object", partner=partner, action=fix) from None
    if not isinstance(payload, dict):
        raise SecretError(f"secret '{secret_id}' is not a JSON object", partner=partner, action=fix)
    password = payload.get("password") or None
    key_text = payload.get("private_key") or None
    passphrase = payload.get("passphrase") or None
    if password is not None and not isinstance(password, str):
        raise SecretError(f"'password' in secret '{secret_id}' is not a string", partner=partner, action=fix)
    if not password and not key_text:
        raise SecretError(f"secret '{secret_id}' holds neither 'password' nor 'private_key'",
                          partner=partner, action=fix)
    key = _load_private_key(partner, secret_id, key_text, passphrase) if key_text else None
    return SftpCredentials(password=password, private_key=key)


def _load_private_key(partner: str, secret_id: str, text: object, passphrase: object) -> paramiko.PKey:
    if not isinstance(text, str) or (passphrase is not None and not isinstance(passphrase, str)):
        raise SecretError(f"'private_key'/'passphrase' in secret '{secret_id}' must be strings",
                          partner=partner, action="store the key as PEM/OpenSSH text")
    text = text.strip() + "\n"
    encrypted_without_passphrase = False
    for key_class in _KEY_CLASSES:
        try:
            return key_class.from_private_key(io.StringIO(text), password=passphrase)
        except paramiko.PasswordRequiredException:
            encrypted_without_passphrase = True
        except (paramiko.SSHException, ValueError, TypeError):
            continue
    if encrypted_without_passphrase and not passphrase:
        raise SecretError(f"the private key in secret '{secret_id}' is encrypted and no 'passphrase' is stored",
                          partner=partner, action=f"add 'passphrase' to secret '{secret_id}'")
    raise SecretError(
        f"the private key in secret '{secret_id}' could not be loaded (not an RSA, ECDSA or Ed25519 key "
        "in OpenSSH/PEM format, or the passphrase is wrong)",
        partner=partner,
        action=f"check 'private_key' and 'passphrase' in secret '{secret_id}'",
    )
