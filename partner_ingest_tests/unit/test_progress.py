"""Progress lines of a long file: their format and their cadence, on an injected clock."""

from __future__ import annotations

from partner_ingest.defs.assets import console_url
from partner_ingest.ingest import run_pipeline
from partner_ingest.ingest.run_pipeline import ProgressReporter, format_progress

GiB = 1024**3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_format_names_partner_file_bytes_percent_rate_and_eta():
    total = 20 * GiB
    done = 31 * total // 100 + 1  # 6.2 GiB
    elapsed = done / 182.4e6
    line = format_progress("acme", "big.bin", done, total, elapsed)
    assert line == "partner 'acme': big.bin: 6.2 GiB of 20.0 GiB (31%), 182.4 MB/s, ETA 1m 21s"


def test_format_of_small_sizes_long_etas_and_no_rate_yet():
    assert format_progress("p", "a/b.csv", 512, 2048, 1.0) == (
        "partner 'p': a/b.csv: 512 B of 2.0 KiB (25%), 0.0 MB/s, ETA 3s")
    assert format_progress("p", "x", 0, GiB, 0.0) == "partner 'p': x: 0 B of 1.0 GiB (0%), 0.0 MB/s, ETA unknown"
    assert format_progress("p", "x", GiB, 100 * GiB, 3600.0).endswith("ETA 99h 00m")  # 1% an hour


def test_a_file_faster_than_the_cadence_logs_nothing():
    clock, lines = Clock(), []
    report = ProgressReporter(lines.append, "acme", "small.csv", every=10, clock=clock)
    for done in range(1, 100):
        clock.now += 0.09
        report(done * 1000, 100_000)
    clock.now += 0.5
    report(100_000, 100_000)  # the last byte never logs: the "landed" line follows
    assert lines == []


def test_a_long_file_logs_at_most_once_per_interval():
    clock, lines = Clock(), []
    report = ProgressReporter(lines.append, "acme", "big.bin", every=10, clock=clock)
    total = 100 * 1_000_000
    for second in range(1, 46):  # 1 MB a second, one read a second for 45 s
        clock.now += 1
        report(second * 1_000_000, total)
    assert len(lines) == 4  # at 10, 20, 30 and 40 s
    assert lines[0] == "partner 'acme': big.bin: 9.5 MiB of 95.4 MiB (10%), 1.0 MB/s, ETA 1m 30s"
    assert lines[-1].startswith("partner 'acme': big.bin: 38.1 MiB of 95.4 MiB (40%)")


def test_the_default_cadence_is_the_module_setting(monkeypatch):
    clock, lines = Clock(), []
    monkeypatch.setattr(run_pipeline, "PROGRESS_EVERY_SECONDS", 2.0)
    report = ProgressReporter(lines.append, "acme", "f", clock=clock)
    clock.now += 1.9
    report(1, 10)
    clock.now += 0.2
    report(2, 10)
    assert len(lines) == 1


def test_console_url_quotes_the_key_and_adds_a_known_region():
    assert console_url("landing", "partners/acme/in/a b#1.csv", "eu-west-1") == (
        "https://console.aws.amazon.com/s3/object/landing?prefix=partners%2Facme%2Fin%2Fa%20b%231.csv"
        "&region=eu-west-1")
    assert console_url("landing", "k", None) == "https://console.aws.amazon.com/s3/object/landing?prefix=k"


def _outcome(key: str, size: int | None, failed: bool = False, uploaded: bool = True):
    from partner_ingest.errors import PartnerIngestError
    from partner_ingest.ingest.transfer import LandedFile, RemoteVersion

    landed = None if size is None else LandedFile(
        partner="acme", relative_path=key, remote_path=f"/in/{key}", version=RemoteVersion(size=size, mtime=1),
        bucket="b", key=f"p/{key}", s3_version_id=None, sha256="0" * 64, seconds=0.1, uploaded=uploaded)
    error = PartnerIngestError("it broke", partner="acme", path=f"/in/{key}", action="retry") if failed else None
    return run_pipeline.FileOutcome(key, f"/in/{key}", landed=landed, error=error)


def test_the_run_tally_logs_at_most_every_interval_and_counts_every_file():
    clock = Clock()
    tally = run_pipeline.RunTally("acme", 1000, every=10, clock=clock)
    lines = []
    for i in range(1000):
        clock.now += 0.125  # 8 files a second (exact in binary) for 125 s
        outcome = _outcome(f"{i}.csv", None, failed=True) if i % 100 == 0 else _outcome(f"{i}.csv", 2048,
                                                                                           uploaded=i % 2 == 0)
        if (line := tally.add(outcome)) is not None:
            lines.append(line)
    assert len(lines) == 12  # at 10, 20, ... 120 s: a line per ten seconds, not one per file
    assert lines[0] == ("partner 'acme': 80 of 1000 files done in 10s: 79 landed (39 uploaded, 158.0 KiB), "
                        "1 failed, 8.0 files/s")
    assert tally.line() == ("partner 'acme': 1000 of 1000 files done in 2m 05s: 990 landed (490 uploaded, 1.9 MiB), "
                            "10 failed, 8.0 files/s")


def test_a_file_landed_whose_after_landing_action_failed_is_one_file_done():
    from partner_ingest.errors import AfterLandingError

    clock = Clock()
    tally = run_pipeline.RunTally("acme", 2, every=10, clock=clock)
    outcome = _outcome("a.csv", 10)
    outcome.after_landing_error = AfterLandingError("could not delete", partner="acme", path="/in/a.csv",
                                                    action="grant delete")
    tally.add(outcome)
    tally.add(_outcome("b.csv", 10))
    assert tally.line().startswith("partner 'acme': 2 of 2 files done in 0s: 2 landed (2 uploaded, 20 B), 1 failed")
