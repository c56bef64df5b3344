"""The demo partner's files: a few CSVs in nested folders, an awkward file name and one large binary.

The tree covers what the pipeline must handle: nested directories, a name with a space, a comma and
non-ASCII letters (partition keys must survive it), a file the ``include`` globs skip, and a file above
the 16 MiB multipart threshold. Contents are seeded, so every demo state dir holds the same bytes.
Generation only writes missing files (each via a temporary name and a rename), so a restart keeps the
files' mtimes and the sensor does not see them as changed; a file a user edited or added stays as is.
"""

from __future__ import annotations

import os
import random
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

MiB = 1024 * 1024
LARGE_FILE_SIZE = 20 * MiB
INBOUND_DIR = "inbound"


@dataclass(frozen=True)
class SampleFile:
    """A file of the sample tree, by its path relative to the SFTP root."""

    relative_path: str
    write: Callable[[Path], None]


def _rng(name: str) -> random.Random:
    return random.Random(f"partner-ingest-demo:{name}")


def _orders_csv(name: str, rows: int, first_day: date) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        rng = _rng(name)
        lines = ["order_id,order_date,customer_id,sku,quantity,unit_price_eur"]
        for i in range(rows):
            day = first_day + timedelta(days=rng.randrange(28))
            lines.append(f"{name}-{i:05d},{day.isoformat()},C{rng.randrange(10_000, 99_999)},"
                         f"SKU-{rng.randrange(100, 999)},{rng.randrange(1, 20)},{rng.randrange(100, 99_999) / 100:.2f}")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return write


def _report_csv(path: Path) -> None:
    rng = _rng("q3-report")
    lines = ["région,catégorie,chiffre_d_affaires_eur,commentaire"]
    regions = ["Île-de-France", "Provence-Alpes-Côte d'Azur", "Auvergne-Rhône-Alpes", "Bretagne", "Grand Est"]
    for i in range(120):
        region = regions[i % len(regions)]
        lines.append(f"\"{region}\",catégorie-{rng.randrange(1, 9)},{rng.randrange(1_000, 900_000)},"
                     f"\"révisé, version {rng.randrange(1, 4)}\"")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _notes_txt(path: Path) -> None:
    path.write_text("Not ingested: the demo partner's include globs only take *.csv, *.bin and *.zip files.\n",
                    encoding="utf-8")


def _large_binary(path: Path) -> None:
    rng = _rng("large-binary")
    with path.open("wb") as out:
        for _ in range(LARGE_FILE_SIZE // MiB):
            out.write(rng.randbytes(MiB))


def _archive_zip(path: Path) -> None:
    """A small zip of CSVs, so the demo shows archive expansion (``partners/demo/archive_contents``)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for n in (1, 2):
            inner = path.with_name(f".inner-{n}.csv")
            _orders_csv(f"archived-{n:04d}", 40, date(2026, 10, 1))(inner)
            archive.write(inner, f"october/orders-{n:04d}.csv")
            inner.unlink()


def sample_files() -> list[SampleFile]:
    """The sample tree: paths are relative to the SFTP root and all lie under ``inbound/``."""
    files = [
        SampleFile(f"{INBOUND_DIR}/2026/11/orders-{n:04d}.csv", _orders_csv(f"orders-{n:04d}", 60 + 7 * n,
                                                                             date(2026, 11, 1)))
        for n in range(1, 4)
    ]
    files += [
        SampleFile(f"{INBOUND_DIR}/2026/12/orders-{n:04d}.csv", _orders_csv(f"orders-{n:04d}", 60 + 7 * n,
                                                                             date(2026, 12, 1)))
        for n in range(4, 6)
    ]
    files += [
        SampleFile(f"{INBOUND_DIR}/reports/Q3 résumé, final.csv", _report_csv),
        SampleFile(f"{INBOUND_DIR}/bulk/transactions-2026-12.bin", _large_binary),
        SampleFile(f"{INBOUND_DIR}/archive/october-orders.zip", _archive_zip),
        SampleFile(f"{INBOUND_DIR}/README.txt", _notes_txt),
    ]
    return files


def generate_sample_tree(root: Path) -> list[Path]:
    """Create the missing sample files under ``root``; return every sample file's absolute path."""
    root = Path(root)
    paths = []
    for sample in sample_files():
        path = root / sample.relative_path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.partial")
            try:
                sample.write(partial)
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)
        paths.append(path)
    return paths

