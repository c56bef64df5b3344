"""The channel receive buffer keeps paramiko's BufferedPipe contract (it is exercised end to end by
every SFTP test; these pin the edge cases)."""

from __future__ import annotations

import threading
import time

import pytest
from paramiko.buffered_pipe import PipeTimeout

from partner_ingest.sftp.channel_buffer import ChunkPipe


def test_reads_split_and_join_chunks_in_order():
    pipe = ChunkPipe()
    for chunk in (b"abc", b"defgh", b"", b"ij"):
        pipe.feed(chunk)
    assert len(pipe) == 10 and pipe.read_ready()
    assert pipe.read(2) == b"ab"
    assert pipe.read(4) == b"cdef"
    assert pipe.read(100) == b"ghij"
    assert not pipe.read_ready()


def test_timeout_then_data_then_close():
    pipe = ChunkPipe()
    with pytest.raises(PipeTimeout):
        pipe.read(1, timeout=0.0)
    started = time.monotonic()
    with pytest.raises(PipeTimeout):
        pipe.read(1, timeout=0.2)
    assert time.monotonic() - started >= 0.19
    threading.Timer(0.1, pipe.feed, args=(b"late",)).start()
    assert pipe.read(10, timeout=5) == b"late"
    pipe.feed(b"xy")
    pipe.close()
    assert pipe.read(10) == b"xy" and pipe.read(10) == b""


def test_event_tracks_readiness():
    pipe = ChunkPipe()
    event = threading.Event()
    pipe.set_event(event)
    assert not event.is_set()
    pipe.feed(b"z")
    assert event.is_set()
    assert pipe.empty() == b"z" and not event.is_set()
