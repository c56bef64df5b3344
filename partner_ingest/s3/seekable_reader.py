"""A read-only, seekable file object over one S3 object version, for ``zipfile``.

``zipfile`` needs ``seek``/``tell`` (the central directory sits at the end), boto3's
``StreamingBody`` is forward-only, and the libraries that offer seekable S3 files (s3fs,
smart_open) are not dependencies of this project. So this small adapter issues ranged GETs and keeps
a few blocks cached: memory is ``block_size * max_blocks`` whatever the archive's size, and no byte
of the archive touches local disk.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from typing import Any


class S3SeekableReader(io.RawIOBase):
    def __init__(self, s3: Any, bucket: str, key: str, *, version_id: str | None = None,
                 block_size: int = 1024 * 1024, max_blocks: int = 8) -> None:
        super().__init__()
        self._s3, self._bucket, self._key = s3, bucket, key
        head_args = {"Bucket": bucket, "Key": key, **({"VersionId": version_id} if version_id else {})}
        head = s3.head_object(**head_args)
        self.version_id = head.get("VersionId") or version_id
        self.size = head["ContentLength"]
        self._block_size = block_size
        self._max_blocks = max_blocks
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._pos = 0
        self.bytes_fetched = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        position = base + offset
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._pos = position
        return position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), max(self.size - self._pos, 0))
        done = 0
        while done < wanted:
            index, start = divmod(self._pos, self._block_size)
            block = self._block(index)
            piece = block[start:start + (wanted - done)]
            if not piece:
                break
            view[done:done + len(piece)] = piece
            done += len(piece)
            self._pos += len(piece)
        return done

    def _block(self, index: int) -> bytes:
        if index in self._blocks:
            self._blocks.move_to_end(index)
            return self._blocks[index]
        first = index * self._block_size
        last = min(first + self._block_size, self.size) - 1
        args = {"Bucket": self._bucket, "Key": self._key, "Range": f"bytes={first}-{last}"}
        if self.version_id:
            args["VersionId"] = self.version_id
        data = self._s3.get_object(**args)["Body"].read()
        self.bytes_fetched += len(data)
        self._blocks[index] = data
        if len(self._blocks) > self._max_blocks:
            self._blocks.popitem(last=False)
        return data
