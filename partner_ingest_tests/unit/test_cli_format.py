"""keyscan's output format: partners.yaml lines with OpenSSH SHA256 fingerprints (no servers)."""

from __future__ import annotations

import base64
import hashlib

import yaml

from partner_ingest.operator_check import fingerprint, key_line
from partner_ingest.sftp.host_keys import check_openssh_key_line


def test_fingerprint_is_openssh_sha256_unpadded_and_the_line_is_a_yaml_host_key():
    blob = base64.b64decode("AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
    expected = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert fingerprint(blob) == f"SHA256:{expected}" and not fingerprint(blob).endswith("=")
    assert fingerprint(blob) == "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"  # ssh-keygen -lf
    line = key_line("ssh-ed25519", blob)
    assert line.startswith("- ssh-ed25519 AAAAC3NzaC1lZDI1NTE5") and line.endswith(fingerprint(blob))
    (item,) = yaml.safe_load(line)
    assert item == f"ssh-ed25519 {base64.b64encode(blob).decode()}"
    check_openssh_key_line(item, hint="")
