"""Where files come from and where rejected files go: local folders, globs and ``s3://`` prefixes.

A source object is named by its key relative to the source root. Partition keys (Dagster) and
file names in the database are derived from that key, so the same file is the same thing
everywhere. S3 access uses the standard AWS settings (``AWS_ENDPOINT_URL``, credentials chain).
"""

from __future__ import annotations

import fnmatch
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

XML_SUFFIXES = (".xml", ".xml.gz")
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class SourceLocation:
    """A parsed source or quarantine URI."""

    uri: str
    bucket: str | None = None  # set for s3:// locations
    root: str = ""  # S3 prefix or local folder
    pattern: str | None = None  # glob relative to root, if the URI had one

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None

    def local_path(self, key: str) -> Path:
        """Where a key of a local location is on disk (the key of a single-file location is empty)."""
        return Path(self.root) / key if key else Path(self.root)

    def display(self, key: str) -> str:
        """The object's full URI, as shown to users."""
        if self.is_s3:
            return f"s3://{self.bucket}/{self.root}{key}"
        return str(Path(self.root) / key)


@dataclass(frozen=True)
class SourceObject:
    key: str  # relative to the location's root, '/'-separated
    size: int
    modified: datetime


def parse_location(uri: str | Path) -> SourceLocation:
    text = str(uri)
    if text.startswith("s3://"):
        parsed = urlparse(text)
        if not parsed.netloc:
            raise ValueError(f"S3 URI without a bucket: {text}")
        prefix = parsed.path.lstrip("/")
        pattern = None
        if any(ch in prefix for ch in _GLOB_CHARS):
            cut = min(prefix.find(ch) for ch in _GLOB_CHARS if ch in prefix)
            prefix, pattern = prefix[: prefix.rfind("/", 0, cut) + 1], prefix[prefix.rfind("/", 0, cut) + 1 :]
        return SourceLocation(text, bucket=parsed.netloc, root=prefix, pattern=pattern)
    if any(ch in text for ch in _GLOB_CHARS):
        parts = Path(text).parts
        first = next(i for i, part in enumerate(parts) if any(ch in part for ch in _GLOB_CHARS))
        root = Path(*parts[:first]) if first else Path(".")
        return SourceLocation(text, root=str(root), pattern=str(PurePosixPath(*parts[first:])))
    return SourceLocation(text, root=text)


def _is_candidate(key: str, pattern: str | None) -> bool:
    if pattern is not None:
        return fnmatch.fnmatchcase(key, pattern)
    return key.lower().endswith(XML_SUFFIXES)


_clients: dict[int, Any] = {}


def s3_client() -> Any:
    """This process's boto3 S3 client, configured by the standard AWS settings (``AWS_ENDPOINT_URL`` included).

    One per process: creating a client costs more than fetching a small file, and a client
    inherited through fork must not share its connections with the parent.
    """
    import boto3  # imported here: local-only users never need it

    pid = os.getpid()
    if pid not in _clients:
        _clients[pid] = boto3.client("s3")
    return _clients[pid]


def list_objects(location: SourceLocation, client: Any | None = None) -> list[SourceObject]:
    """Every candidate file of the location, sorted by key (all pages of an S3 listing)."""
    if location.is_s3:
        client = client or s3_client()
        found = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=location.root):
            for item in page.get("Contents", []):
                key = item["Key"][len(location.root) :]
                if key and not key.endswith("/") and _is_candidate(key, location.pattern):
                    found.append(SourceObject(key, item["Size"], item["LastModified"]))
        return sorted(found, key=lambda o: o.key)
    root = Path(location.root)
    if root.is_file() and location.pattern is None:
        stat = root.stat()
        return [SourceObject("", stat.st_size, datetime.fromtimestamp(stat.st_mtime, timezone.utc))]
    if not root.is_dir():
        raise FileNotFoundError(f"source not found: {location.uri}")
    found = []
    candidates = root.glob(location.pattern) if location.pattern else (p for p in root.rglob("*") if _is_candidate(p.name, None))
    for path in candidates:
        key = path.relative_to(root).as_posix()
        if path.is_file():
            stat = path.stat()
            found.append(SourceObject(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, timezone.utc)))
    return sorted(found, key=lambda o: o.key)


def object_size(location: SourceLocation, key: str, client: Any | None = None) -> int | None:
    """The object's size in bytes (a stat, or an S3 HEAD request); None when it is not there (any more)."""
    if not location.is_s3:
        path = location.local_path(key)
        return path.stat().st_size if path.is_file() else None
    from botocore.exceptions import ClientError

    try:
        return int((client or s3_client()).head_object(Bucket=location.bucket, Key=location.root + key)["ContentLength"])
    except ClientError:
        return None  # reading it will fail with the reason, for this file alone


# Characters that end or rewrite a line on a terminal or in a log: C0 and C1 controls, DEL, Unicode's separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """``text`` on one line, as a report shows it: each control character escaped (``\\n``, ``\\x1b``), so that a
    file name or a value (stored exactly as sent) cannot forge lines of the report or drive the terminal."""
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def object_name(location: SourceLocation, key: str) -> str:
    """The name a file is known by in the database: its key, or the file name of a single file. A local name that
    is not UTF-8 (Python holds its bytes as surrogates) shows each such byte as \\xNN, so it can be stored and read."""
    name = key or Path(location.root).name
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@contextmanager
def local_copy(location: SourceLocation, key: str, client: Any | None = None) -> Iterator[Path]:
    """A local path holding the object's bytes: the file itself, or a streamed download from S3."""
    if not location.is_s3:
        yield location.local_path(key)
        return
    client = client or s3_client()
    with tempfile.TemporaryDirectory(prefix="eudravig-s3-") as scratch:
        target = Path(scratch) / "object.xml"
        client.download_file(location.bucket, location.root + key, str(target))
        yield target


# -- partition keys -------------------------------------------------------------------------------
# Dagster refuses '...' and control characters in partition keys, and commas, quotes or slashes
# make keys awkward in URLs and backfill selections. Keys keep letters, digits, '_', '-' and single
# dots readable and escape every other byte as ~XX, which is reversible.
_SAFE = re.compile(r"[A-Za-z0-9_\-.]")


def partition_key_for(key: str) -> str:
    out: list[str] = []
    for char in key:
        if _SAFE.fullmatch(char) and not (char == "." and out and out[-1].endswith(".")):
            out.append(char)
        else:
            out.append("".join(f"~{byte:02X}" for byte in char.encode("utf-8", "surrogateescape")))
    return "".join(out)


def key_for_partition(partition_key: str) -> str:
    pieces = re.split(r"~([0-9A-F]{2})", partition_key)  # text, hex, text, hex, ..., text
    raw = bytearray()
    for index, piece in enumerate(pieces):
        raw.extend(bytes.fromhex(piece) if index % 2 else piece.encode("ascii"))
    return raw.decode("utf-8", "surrogateescape")  # a local name that is not UTF-8 comes back as Python named it


# -- quarantine -----------------------------------------------------------------------------------
def _contained_key(key: str) -> str:
    """The key with every '..', '.' and empty segment removed: nothing can escape the root."""
    parts = [part for part in key.replace("\\", "/").split("/") if part not in ("", ".", "..")]
    if not parts:
        raise ValueError(f"cannot quarantine an object without a name: {key!r}")
    return "/".join(parts)


def quarantine_file(quarantine: SourceLocation, key: str, data_path: Path | None, reason: str, client: Any | None = None) -> str:
    """Copy a rejected file (if readable) and a ``.reason.txt`` beside it (the file's key, then why); returns where it went."""
    safe_key = _contained_key(key)
    note = f"{key}: {reason.rstrip()}\n"
    if quarantine.is_s3:
        client = client or s3_client()
        target = quarantine.root + safe_key
        if data_path is not None and data_path.exists():
            client.upload_file(str(data_path), quarantine.bucket, target)
        client.put_object(Bucket=quarantine.bucket, Key=target + ".reason.txt", Body=note.encode("utf-8"))
        return f"s3://{quarantine.bucket}/{target}"
    root = Path(quarantine.root).resolve()
    target_path = (root / safe_key).resolve()
    if root not in target_path.parents:
        raise ValueError(f"quarantine target escapes {root}: {key!r}")
    target_path.parent.mkdir(parents=True, exist_ok=True)
    if data_path is not None and data_path.is_symlink():
        # A link may lead anywhere (a key, a password file): its target is never copied out of where it lives
        note = f"{key}: {reason.rstrip()} (a symbolic link to elsewhere: not copied)\n"
    elif data_path is not None and data_path.exists():
        _write_private(target_path, data_path.read_bytes())
    _write_private(target_path.with_name(target_path.name + ".reason.txt"), note.encode("utf-8"))
    return str(target_path)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``path`` readable by its owner only (rejected files hold patients' data), never through a symbolic link."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)  # a copy left by an earlier run keeps no wider mode
        handle.write(data)
