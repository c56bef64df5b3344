"""The pipelined SFTP reader against an in-memory server that misbehaves on purpose (no sshd).

The reader is the one place where an untrusted server's answers become landed bytes, so each of its
rules is pinned here: short replies completed wherever they fall, long replies refused, the end of
file proven, a server's read cap learned (or not), bounded requests, a clean channel after drain,
resume at the first byte not received; and a seeded fuzz that every read stays byte-exact.
"""

from __future__ import annotations

import random

import paramiko
import pytest

from partner_ingest.sftp.reader import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_IN_FLIGHT,
    MAX_REQUESTS_IN_FLIGHT,
    MIN_LEARNED_CHUNK,
    PipelinedReader,
    RemoteFileGrew,
    RemoteFileShrunk,
    ServerProtocolError,
    server_read_limit,
)
from partner_ingest_tests.unit.fake_sftp import FakeSftp

KiB = 1024
MiB = 1024 * KiB
HANDLE = b"handle-1"
LINK_ERRORS = (paramiko.SSHException, EOFError, OSError)  # what a dropped link raises (as transfer.py catches)
BYTES_IN_FLIGHT = DEFAULT_CHUNK_SIZE * DEFAULT_MAX_IN_FLIGHT


def _data(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def _read_all(reader: PipelinedReader, size: int, step: int = MiB) -> bytes:
    out = bytearray()
    while reader.offset < size:
        out += reader.read(step)
    reader.confirm_eof()
    return bytes(out)


def _capped(cap: int):
    """A server that answers at most ``cap`` bytes per read, like Windows-based servers at 32-64 KiB."""
    return lambda offset, length, index: min(length, cap)


def test_honest_server_reads_byte_exact_and_proves_the_end():
    data = _data(3 * MiB + 17)
    server = FakeSftp(data)
    reader = PipelinedReader(server, HANDLE, size=len(data))
    assert _read_all(reader, len(data), step=100_000) == data
    assert reader.eof_confirmed and reader.learned_chunk_size is None
    assert server.reads[-1] == (len(data), 1)  # the EOF probe, sent with the last data requests
    assert reader.requests == len(server.reads) == -(-len(data) // DEFAULT_CHUNK_SIZE) + 1


def test_read_returns_exactly_what_was_asked_until_the_end():
    """boto3's transfer manager forms its parts from these reads, so a short read would make a short part."""
    data = _data(700 * KiB + 3)
    reader = PipelinedReader(FakeSftp(data, answer=_capped(5000)), HANDLE, size=len(data))
    sizes = [len(reader.read(64 * KiB)) for _ in range(11)]
    assert sizes == [64 * KiB] * 10 + [len(data) - 640 * KiB]
    assert reader.read(64 * KiB) == b"" and reader.read() == b""


CHUNK = 8 * KiB
SMALL_DATA = _data(4 * CHUNK + 1000, seed=1)


@pytest.mark.parametrize("short", [0, 1, 999, MIN_LEARNED_CHUNK - 1, MIN_LEARNED_CHUNK, CHUNK - 1])
@pytest.mark.parametrize("at", [0, CHUNK, 2 * CHUNK, 4 * CHUNK])  # the first, middle ones, the last partial
def test_a_short_reply_at_any_offset_is_completed(at, short):
    asked = set()

    def answer(offset, length, index):
        first = offset not in asked
        asked.add(offset)
        return min(short, length) if offset == at and first else length

    server = FakeSftp(SMALL_DATA, answer=answer)
    reader = PipelinedReader(server, HANDLE, size=len(SMALL_DATA), chunk_size=CHUNK, max_in_flight=4)
    assert _read_all(reader, len(SMALL_DATA), step=3000) == SMALL_DATA
    answered = min(short, len(SMALL_DATA) - at)
    if answered < min(CHUNK, len(SMALL_DATA) - at):  # really short: the rest is asked for again, from its first byte
        assert [offset for offset, _ in server.reads].count(at + answered) == 1 + (answered == 0)


def test_short_replies_everywhere_still_land_every_byte():
    data = _data(2 * MiB + 5, seed=2)
    rng = random.Random(2)
    server = FakeSftp(data, answer=lambda offset, length, index: rng.randrange(1, length + 1))
    assert _read_all(PipelinedReader(server, HANDLE, size=len(data)), len(data)) == data


def test_a_reply_longer_than_its_request_is_refused():
    data = _data(MiB)
    server = FakeSftp(data + _data(10, seed=9),
                      answer=lambda offset, length, index: length + 5 if index == 2 else length)
    reader = PipelinedReader(server, HANDLE, size=len(data))
    with pytest.raises(ServerProtocolError, match=r"answered a read of 261120 bytes at offset 522240 with 261125"):
        _read_all(reader, len(data))


def test_a_long_reply_while_completing_a_short_one_is_refused_and_drain_collects_the_rest():
    """The re-requests of a short answer go out together; the ones after the refused reply are orphans."""
    data = _data(MiB)

    def answer(offset, length, index):
        if index == 0:
            return 32 * KiB  # teaches a 32 KiB cap: the rest of the first chunk is re-asked in 7 pieces
        return length + 1 if offset == 64 * KiB else length

    server = FakeSftp(data + b"x", answer=answer)
    reader = PipelinedReader(server, HANDLE, size=len(data))
    with pytest.raises(ServerProtocolError):
        reader.read(MiB)
    assert server.outstanding > 0
    reader.drain()
    assert server.outstanding == 0 and server.queued == 0 and reader.in_flight == 0


def test_data_where_the_file_should_end_is_a_grown_file():
    data = _data(MiB)
    reader = PipelinedReader(FakeSftp(data), HANDLE, size=len(data) - 7)
    with pytest.raises(RemoteFileGrew, match=rf"answered 1 byte\(s\) at offset {len(data) - 7}"):
        _read_all(reader, len(data) - 7)
    assert not reader.eof_confirmed


def test_end_of_file_before_the_stated_size_is_a_shrunk_file():
    data = _data(MiB)
    reader = PipelinedReader(FakeSftp(data), HANDLE, size=len(data) + 7)
    with pytest.raises(RemoteFileShrunk, match=rf"end of file at byte {len(data)}, expected {len(data) + 7}"):
        _read_all(reader, len(data) + 7)


def test_a_server_that_keeps_answering_nothing_is_refused():
    data = _data(100 * KiB)
    stuck = 50 * KiB
    server = FakeSftp(data, answer=lambda offset, length, index: max(0, min(length, stuck - offset)))
    reader = PipelinedReader(server, HANDLE, size=len(data))
    with pytest.raises(RemoteFileShrunk, match=rf"keeps answering no data at byte {stuck}, expected {len(data)}"):
        _read_all(reader, len(data))


def _in_flight_while_reading(reader: PipelinedReader, size: int) -> tuple[bytes, int]:
    """Read to the proven end; also the most requests the reader kept outstanding after any read."""
    out, most = bytearray(), 0
    while reader.offset < size:
        out += reader.read(MiB)
        most = max(most, reader.in_flight)
    reader.confirm_eof()
    return bytes(out), most


def test_the_cap_is_learned_from_the_first_short_reply_keeping_the_bytes_in_flight():
    cap = 32 * KiB
    data = _data(24 * MiB, seed=3)
    server = FakeSftp(data, answer=_capped(cap))
    reader = PipelinedReader(server, HANDLE, size=len(data))
    got, most = _in_flight_while_reading(reader, len(data))
    assert got == data
    assert reader.learned_chunk_size == cap and reader.chunk_size == cap
    requests_for_the_same_bytes = BYTES_IN_FLIGHT // cap  # 255 of 32 KiB: the 8160 KiB of 32 of 255 KiB
    assert requests_for_the_same_bytes == 255 < MAX_REQUESTS_IN_FLIGHT
    assert most == requests_for_the_same_bytes
    # On the wire: those, plus at most one round of re-requests completing an early 255 KiB answer.
    assert requests_for_the_same_bytes <= server.peak_in_flight <= requests_for_the_same_bytes + 7
    # Only the requests sent before the first answer arrived asked for more than the cap.
    assert {length for _, length in server.reads[:DEFAULT_MAX_IN_FLIGHT]} == {DEFAULT_CHUNK_SIZE}
    assert all(length <= cap for _, length in server.reads[DEFAULT_MAX_IN_FLIGHT:])


def test_only_the_first_short_reply_teaches():
    """Later short answers may be arbitrary (a busy server); they must not keep shrinking the requests."""
    data = _data(4 * MiB, seed=4)
    server = FakeSftp(data, answer=lambda offset, length, index: min(length, 64 * KiB if index == 0 else 16 * KiB))
    reader = PipelinedReader(server, HANDLE, size=len(data))
    assert _read_all(reader, len(data)) == data
    assert reader.learned_chunk_size == reader.chunk_size == 64 * KiB


@pytest.mark.parametrize(("cap", "learned"), [(1, None), (MIN_LEARNED_CHUNK - 1, None),
                                              (MIN_LEARNED_CHUNK, MIN_LEARNED_CHUNK)])
def test_a_cap_under_4_kib_is_not_learned(cap, learned):
    data = _data(MiB, seed=5)
    server = FakeSftp(data, answer=lambda offset, length, index: min(length, cap) if index == 0 else length)
    reader = PipelinedReader(server, HANDLE, size=len(data))
    assert _read_all(reader, len(data)) == data
    assert reader.learned_chunk_size == learned
    assert reader.chunk_size == (learned or DEFAULT_CHUNK_SIZE)


def test_the_limits_extension_sets_the_chunk_before_the_first_read():
    limit = 64 * KiB
    data = _data(12 * MiB, seed=6)
    server = FakeSftp(data, read_limit=limit)
    assert server_read_limit(server) == limit
    reader = PipelinedReader(server, HANDLE, size=len(data), server_limit=limit)
    assert reader.chunk_size == limit
    got, most = _in_flight_while_reading(reader, len(data))
    assert got == data
    assert all(length <= limit for _, length in server.reads)  # from the very first request
    assert most == server.peak_in_flight == BYTES_IN_FLIGHT // limit  # 127: the same bytes in flight


def test_without_the_limits_extension_the_default_chunk_stays():
    server = FakeSftp(b"abc")
    assert server_read_limit(server) is None
    reader = PipelinedReader(server, HANDLE, size=3, server_limit=server_read_limit(server))
    assert reader.chunk_size == DEFAULT_CHUNK_SIZE and _read_all(reader, 3) == b"abc"


def test_a_limit_under_4_kib_is_not_taken():
    reader = PipelinedReader(FakeSftp(b""), HANDLE, size=0, server_limit=1)
    assert reader.chunk_size == DEFAULT_CHUNK_SIZE and reader.learned_chunk_size is None


@pytest.mark.parametrize("stop", ["read_half", "read_all_unconfirmed", "confirmed", "nothing_read"])
def test_drain_leaves_nothing_outstanding(stop):
    data = _data(5 * MiB + 1, seed=7)
    server = FakeSftp(data, reorder=random.Random(7))
    reader = PipelinedReader(server, HANDLE, size=len(data))
    if stop == "read_half":
        reader.read(len(data) // 2)
    elif stop == "read_all_unconfirmed":
        reader.read()
    elif stop == "confirmed":
        _read_all(reader, len(data))
    reader.drain()
    assert server.outstanding == 0 and server.queued == 0 and reader.in_flight == 0
    reader.drain()  # twice is harmless


def test_drain_on_a_dead_link_gives_up_quietly():
    data = _data(MiB)
    server = FakeSftp(data)
    reader = PipelinedReader(server, HANDLE, size=len(data))
    reader.read(100)
    server.drop()
    reader.drain()
    assert reader.in_flight == 0


def test_resume_after_a_drop_continues_at_the_first_unreceived_byte():
    data = _data(MiB + 123, seed=8)
    chunk = 64 * KiB
    first = FakeSftp(data, handle=HANDLE)
    reader = PipelinedReader(first, HANDLE, size=len(data), chunk_size=chunk, max_in_flight=4)
    head = reader.read(100_000)  # needs two chunks: 131072 bytes received, 100000 handed over
    first.drop()
    with pytest.raises(LINK_ERRORS):
        reader.read(100_000)
    received = sum(length for _, length in first.delivered)
    assert received == 2 * chunk and reader.offset == 100_000

    second = FakeSftp(data, handle=b"handle-2")
    reader.resume(second, b"handle-2")
    rest = _read_all(reader, len(data), step=77_777)
    assert head + rest == data
    assert second.reads[0] == (received, chunk)  # nothing received is asked for again
    assert sum(length for _, length in second.delivered) == len(data) - received


def test_a_drop_while_topping_up_loses_no_byte_already_handed_over():
    """After a read the pipeline is topped up; if that send hits the dead link, the read still returns its
    bytes (they are the caller's), and the next read raises before consuming anything."""
    data = _data(MiB, seed=10)
    chunk = 64 * KiB
    server = FakeSftp(data, drop_after=6)  # the 7th READ finds the link dead
    reader = PipelinedReader(server, HANDLE, size=len(data), chunk_size=chunk, max_in_flight=4)
    out = bytearray()
    while not server.dropped:
        out += reader.read(chunk)
    assert bytes(out) == data[:3 * chunk]  # the third read's top-up sent the 7th request
    with pytest.raises(LINK_ERRORS):
        reader.read(chunk)
    assert reader.offset == 3 * chunk
    reader.resume(FakeSftp(data), b"handle-2")
    out += _read_all(reader, len(data))
    assert bytes(out) == data


def _fuzz_case(seed: int) -> None:
    """One seeded transfer: random sizes, short and empty answers, out-of-order replies, dropped links."""
    rng = random.Random(seed)
    size = rng.choice([0, 1, 4095, CHUNK, CHUNK + 1, 4 * CHUNK - 1, *(rng.randrange(1, 2 * MiB) for _ in range(2))])
    data = _data(size, seed=seed)
    chunk_size = rng.choice([MIN_LEARNED_CHUNK, CHUNK, 16 * KiB, 64 * KiB])
    empties = 0

    def answer(offset, length, index):
        nonlocal empties
        roll = rng.random()
        if roll < 0.03 and empties < 3:  # an empty answer now and then, never enough to look stuck
            empties += 1
            return 0
        empties = 0
        if roll < 0.25:
            return rng.randrange(1, length + 1)
        if roll < 0.3:
            return min(length, 4 * KiB)
        return length

    max_in_flight = rng.choice([1, 2, 4, 8])

    def server() -> FakeSftp:
        # A link lives at least past its first full pipeline (and the EOF probe), so every link makes progress.
        drop_after = rng.randrange(max_in_flight + 2, max_in_flight + 12) if rng.random() < 0.5 else None
        return FakeSftp(data, answer=answer, reorder=random.Random(rng.random()) if rng.random() < 0.5 else None,
                        drop_after=drop_after)

    link = server()
    reader = PipelinedReader(link, HANDLE, size=size, chunk_size=chunk_size, max_in_flight=max_in_flight)
    out = bytearray()
    resumes = 0
    while not reader.eof_confirmed:
        try:
            if reader.offset < size:
                want = rng.choice([1, 1000, CHUNK, 100 * KiB, -1])
                at = reader.offset
                piece = reader.read(want)
                assert piece == data[at:at + want if want >= 0 else size], f"seed {seed}: read {want} at {at}"
                out += piece
            else:
                reader.confirm_eof()
        except LINK_ERRORS:  # a RemoteFileMismatch is none of these: it fails the case
            resumes += 1
            assert resumes < 50, f"seed {seed}: no progress"
            link = server()
            reader.resume(link, b"handle-%d" % resumes)
    reader.drain()
    assert bytes(out) == data, f"seed {seed}: {len(out)} bytes read of {size}"
    assert link.outstanding == 0


@pytest.mark.parametrize("block", range(4))
def test_fuzz_every_read_is_byte_exact(block):
    """200 fixed seeds in four blocks (so a failure names a small range, and the run stays deterministic)."""
    for seed in range(block * 50, block * 50 + 50):
        _fuzz_case(seed)


def test_a_far_partners_bytes_in_flight_set_the_pipeline_depth_and_survive_a_learned_cap():
    """``limits.read_in_flight_bytes`` is what one connection moves per round trip; a learned cap keeps
    the bytes, not the request count."""
    data = _data(96 * MiB, seed=5)   # the first 32 MiB go out before the cap is learned
    wide = PipelinedReader(FakeSftp(data), HANDLE, size=len(data), bytes_in_flight=32 * MiB)
    got, most = _in_flight_while_reading(wide, len(data))
    assert got == data and most == (32 * MiB) // DEFAULT_CHUNK_SIZE
    capped = PipelinedReader(FakeSftp(data, answer=_capped(64 * KiB)), HANDLE, size=len(data),
                             bytes_in_flight=32 * MiB)
    got, most = _in_flight_while_reading(capped, len(data))
    assert got == data and capped.learned_chunk_size == 64 * KiB and most == 512


def test_the_channel_window_always_holds_the_reads_in_flight():
    from partner_ingest.config import PartnerConfig
    from partner_ingest.sftp.connection import ConnectionSettings, channel_window

    base = {"name": "p", "host": "h", "username": "u", "secret_id": "s", "remote_dir": "/d", "landing_prefix": "p/",
            "host_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOX9DK+u0/TmQigRmaMo5k1Ynbt90m8HlN6FKH0w78Ji"]}
    settings = ConnectionSettings()
    for in_flight in (256 * KiB, 8 * MiB, 64 * MiB):
        partner = PartnerConfig.model_validate({**base, "limits": {"read_in_flight_bytes": in_flight}})
        assert channel_window(settings, partner) >= in_flight + settings.max_packet_size
