"""The misbehaving SFTP server really misbehaves (seen with plain paramiko, not the product), and with no
misbehaviour the product lands through it, so behaviour tests built on it test the product, not the rig."""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Iterator

import paramiko
import pytest
from paramiko.sftp import CMD_DATA, CMD_READ, int64

from partner_ingest_tests.harness.dagster_helpers import land
from partner_ingest_tests.harness.files import KiB
from partner_ingest_tests.harness.misbehaving_sftp import (
    ASYNCSSH_MAX_READ_LEN,
    GARBAGE_BYTE,
    MisbehavingRig,
    Misbehaviour,
)

BIG = bytes(range(256)) * (1024 * 4)   # 1 MiB, every offset distinguishable mod 256


@contextlib.contextmanager
def _sftp(rig: MisbehavingRig) -> Iterator[paramiko.SFTPClient]:
    key_type, key_data = rig.endpoint.host_key_line.split()
    host_key = paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data))
    transport = paramiko.Transport((rig.endpoint.host, rig.endpoint.port))
    transport.banner_timeout = transport.auth_timeout = 10
    try:
        transport.connect(hostkey=host_key, username=rig.endpoint.username, password=rig.password)
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp is not None
        sftp.get_channel().settimeout(10)
        yield sftp
    finally:
        transport.close()


def _raw_read(sftp: paramiko.SFTPClient, handle: bytes, offset: int, length: int) -> bytes:
    """One READ request of ``length`` bytes; paramiko's own read() would split it into 32 KiB requests."""
    t, msg = sftp._request(CMD_READ, handle, int64(offset), int(length))
    assert t == CMD_DATA
    return msg.get_string()


def test_omit_size_and_mtime_everywhere(misbehaving_partner):
    rig = misbehaving_partner(Misbehaviour(omit_size=True, omit_mtime=True))
    rig.write("a.csv", b"x" * 1000, mtime=1_600_000_000)
    with _sftp(rig) as sftp:
        stat, lstat = sftp.stat("/a.csv"), sftp.lstat("/a.csv")
        [listed] = [a for a in sftp.listdir_attr("/") if a.filename == "a.csv"]
        with sftp.open("/a.csv", "rb") as f:
            fstat = f.stat()
            assert f.read() == b"x" * 1000   # the content is still all there
    for attrs in (stat, lstat, listed, fstat):
        assert attrs.st_size is None and attrs.st_mtime is None and attrs.st_atime is None
        assert attrs.st_mode is not None   # the type is still known


def test_size_delta_misreports_size(misbehaving_partner):
    rig = misbehaving_partner(Misbehaviour(size_delta=-100))
    rig.write("d/a.bin", b"y" * 1000)
    with _sftp(rig) as sftp:
        [listed] = sftp.listdir_attr("/d")
        with sftp.open("/d/a.bin", "rb") as f:
            sizes = {sftp.stat("/d/a.bin").st_size, sftp.lstat("/d/a.bin").st_size, listed.st_size, f.stat().st_size}
    assert sizes == {900}
    rig.misbehaviour.size_delta = 50    # read per request: a test can change its mind mid-way
    with _sftp(rig) as sftp:
        assert sftp.stat("/d/a.bin").st_size == 1050


def test_read_cap_answers_32_kib_of_a_255_kib_request(misbehaving_partner):
    rig = misbehaving_partner(Misbehaviour(read_cap=32 * KiB))
    rig.write("big.bin", BIG)
    with _sftp(rig) as sftp, sftp.open("/big.bin", "rb") as f:
        assert _raw_read(sftp, f.handle, 0, 255 * KiB) == BIG[:32 * KiB]
        assert _raw_read(sftp, f.handle, 100_000, 255 * KiB) == BIG[100_000:100_000 + 32 * KiB]
    counts = rig.counters.snapshot()
    assert counts["reads"] == 2 and counts["max_read_requested"] == 255 * KiB
    assert counts["bytes_answered"] == 64 * KiB and counts["short_answers"] == 2 and counts["opens"] == 1


def test_stock_asyncssh_answers_reads_beyond_its_advertised_limit(misbehaving_partner):
    """No misbehaviour: asyncssh itself does not clamp, so a capped read is the harness's doing."""
    rig = misbehaving_partner()
    rig.write("big.bin", BIG * 6)
    with _sftp(rig) as sftp, sftp.open("/big.bin", "rb") as f:
        assert len(_raw_read(sftp, f.handle, 0, 255 * KiB)) == 255 * KiB
        assert len(_raw_read(sftp, f.handle, 0, ASYNCSSH_MAX_READ_LEN + KiB)) == ASYNCSSH_MAX_READ_LEN + KiB
    assert "limits@openssh.com" not in rig.server.advertised_extensions


def test_long_reads_send_more_than_asked(misbehaving_partner):
    rig = misbehaving_partner(Misbehaviour(long_reads=10))
    rig.write("a.bin", BIG[:1000])
    with _sftp(rig) as sftp, sftp.open("/a.bin", "rb") as f:
        assert _raw_read(sftp, f.handle, 0, 100) == BIG[:110]                          # file bytes past the range
        assert _raw_read(sftp, f.handle, 995, 5) == BIG[995:1000] + GARBAGE_BYTE * 10   # garbage past the end
        with pytest.raises(EOFError):
            _raw_read(sftp, f.handle, 1000, 5)                                         # EOF stays EOF
    assert rig.counters.long_answers == 2


def test_short_reads_every_third_read_is_half(misbehaving_partner):
    rig = misbehaving_partner(Misbehaviour(short_reads=True))
    rig.write("a.bin", BIG)
    with _sftp(rig) as sftp, sftp.open("/a.bin", "rb") as f:
        answers = [len(_raw_read(sftp, f.handle, i * 64 * KiB, 64 * KiB)) for i in range(6)]
        assert _raw_read(sftp, f.handle, len(BIG) - 1, 1) == BIG[-1:]    # never 0 bytes before EOF
    assert answers == [64 * KiB, 64 * KiB, 32 * KiB, 64 * KiB, 64 * KiB, 32 * KiB]
    assert rig.counters.short_answers == 2


def test_file_swapped_for_a_symlink_after_the_listing(misbehaving_partner):
    rig = misbehaving_partner(Misbehaviour(swap_for_symlink={"in/a.csv": "secret.txt"}))
    rig.write("in/a.csv", b"partner data")
    rig.write("secret.txt", b"not for landing")
    with _sftp(rig) as sftp:
        assert sftp.lstat("/in/a.csv").st_mode & 0o170000 == 0o100000    # not listed yet: untouched
        [listed] = sftp.listdir_attr("/in")
        assert listed.st_mode & 0o170000 == 0o100000                    # the listing sees a regular file
        assert sftp.lstat("/in/a.csv").st_mode & 0o170000 == 0o120000   # the next look finds a link
        assert sftp.readlink("/in/a.csv") == "/secret.txt"
        with sftp.open("/in/a.csv", "rb") as f:
            assert f.read() == b"not for landing"
    assert os.path.islink(rig.tree / "in/a.csv") and rig.counters.swaps == 1


def test_before_open_hook_sees_relative_paths(misbehaving_partner):
    opened: list[str] = []
    rig = misbehaving_partner(Misbehaviour(before_open=opened.append))
    rig.write("x/y.csv", b"1")
    with _sftp(rig) as sftp, sftp.open("/x/y.csv", "rb") as f:
        f.read()
    assert opened == ["x/y.csv"]


def test_limits_extension_switch(misbehaving_partner):
    rig = misbehaving_partner(Misbehaviour(limits=True, read_cap=32 * KiB))
    assert "limits@openssh.com" in rig.server.advertised_extensions
    with _sftp(rig) as sftp:
        t, msg = sftp._request(paramiko.sftp.CMD_EXTENDED, "limits@openssh.com")
        assert t == paramiko.sftp.CMD_EXTENDED_REPLY
        _max_packet, max_read = msg.get_int64(), msg.get_int64()
    assert max_read == 32 * KiB and rig.counters.limits_requests == 1


def test_product_lands_through_an_honest_server(misbehaving_partner, s3):
    rig = misbehaving_partner()
    data = os.urandom(300 * KiB)
    rig.write("a.csv", data)
    result, _, _ = land(rig.partner, rig.landing.bucket, ["a.csv"])
    assert result.success
    body = s3.get_object(Bucket=rig.landing.bucket, Key=f"partners/{rig.partner.name}/a.csv")["Body"].read()
    assert body == data
    assert rig.counters.opens >= 1 and rig.counters.bytes_answered >= len(data)
