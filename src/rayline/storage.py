"""All I/O to the storage root goes through here.

The root is a local directory or any `pyarrow.fs` URI (s3://, gs://, hdfs://, file://). Stages
get a :class:`Storage` passed in and address things by paths relative to the root, so the same
code runs on a laptop and on a cluster whose nodes share an object store.

Publishing is the one rule that keeps half-written output invisible: a stage writes under a
fresh temporary prefix, then :meth:`Storage.publish` moves it into place. On a local filesystem
that is an atomic directory rename; on object stores, where a "directory" rename is a copy,
readers additionally require the completion marker (`_SUCCESS`) written last.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

SUCCESS_MARKER = "_SUCCESS"
log = logging.getLogger(__name__)
# Staging names carry their creation time: object stores report no mtime for a "directory",
# and the sweeper must never take a young staging prefix (a live writer's) for an abandoned one.
_STAGING_AGE = re.compile(r"^\.(?:tmp|old)-.*-(\d{10})-[0-9a-f]{10}$")


def join_uri(uri: str, *parts: str) -> str:
    """`uri` with path parts appended before its query, if any: an S3-compatible store is named
    as s3://bucket/prefix?endpoint_override=host:9000&scheme=http, and the query must stay last."""
    base, sep, query = uri.partition("?")
    rel = "/".join(p.strip("/") for p in parts if p)
    if rel:
        base = f"{base.rstrip('/')}/{rel}"
    return f"{base}{sep}{query}"


def split_uri(uri: str) -> tuple[str, str]:
    """(parent URI, last path component) of a URI or path, its query kept on the parent."""
    base, sep, query = uri.partition("?")
    parent, _, name = base.rstrip("/").rpartition("/")
    if parent.endswith(":/"):  # s3://bucket: the bucket is the parent, not "s3:/"
        parent += "/"
    return f"{parent or ('/' if base.startswith('/') else '.')}{sep}{query}", name


FOOTER_READERS = 16  # footers read at once: on object storage each is a round trip of its own


def footer_rows(fs: pafs.FileSystem, paths: list[str]) -> list[int]:
    """Rows in each Parquet file on `fs`, from its footer, in the order given. Read several at a
    time: a batch output holds a file per batch, an input may hold thousands, and on object
    storage reading their footers one after the other adds a round trip per file."""
    def rows(path: str) -> int:
        with fs.open_input_file(path) as f:
            return pq.ParquetFile(f).metadata.num_rows

    if len(paths) <= 1:
        return [rows(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(FOOTER_READERS, len(paths))) as pool:
        return list(pool.map(rows, paths))


@dataclass
class Storage:
    root: str
    _fs: pafs.FileSystem | None = field(default=None, repr=False, compare=False)
    _base: str = field(default="", repr=False, compare=False)

    def __post_init__(self) -> None:
        if "://" not in self.root:
            # Relative local roots resolve against the caller's cwd once, so Ray workers whose
            # cwd differs (job working dirs) still see the same place.
            self.root = os.path.abspath(os.path.expanduser(self.root))

    # pyarrow filesystems pickle fine, but resolving lazily keeps construction free of I/O.
    @property
    def fs(self) -> pafs.FileSystem:
        if self._fs is None:
            self._fs, self._base = pafs.FileSystem.from_uri(self.root)
        return self._fs

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        """Filesystem path (for `self.fs`) of a location under the root."""
        self.fs  # resolve _base
        rel = "/".join(p.strip("/") for p in parts if p)
        return f"{self._base.rstrip('/')}/{rel}" if rel else self._base

    def uri(self, *parts: str) -> str:
        """Location as a URI another process (a Ray worker, a user) can open."""
        return join_uri(self.root, *parts)

    # ------------------------------------------------------------------ queries
    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def is_complete(self, *parts: str) -> bool:
        return self.exists(*parts, SUCCESS_MARKER)

    def list_dir(self, *parts: str) -> list[str]:
        """Names in a directory ([] if there is none). Locally through os.listdir: Arrow stats
        every entry it lists, and fails the whole listing when a concurrent writer's temporary
        file vanishes in between (seen with four processes registering at once)."""
        if self.is_local:
            try:
                return sorted(os.listdir(self.path(*parts)))
            except (FileNotFoundError, NotADirectoryError):
                return []
        info = self.fs.get_file_info(pafs.FileSelector(self.path(*parts), allow_not_found=True))
        return sorted(i.base_name for i in info)

    def list_files(self, *parts: str, suffix: str = "") -> list[str]:
        sel = pafs.FileSelector(self.path(*parts), recursive=True, allow_not_found=True)
        return sorted(i.path for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File and i.path.endswith(suffix))

    # ------------------------------------------------------------------ bytes and JSON
    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self.path(*parts)) as f:
            return f.read()

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write a whole file so that a reader never sees it half-written."""
        final = self.path(*parts)
        self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        if not self.is_local:
            # Object-store PUTs are atomic per object.
            with self.fs.open_output_stream(final) as f:
                f.write(data)
            return
        tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)

    def check_writable(self) -> None:
        """Write and remove a small file at the root: a root that cannot be written (a read-only
        mount, a path that cannot exist, an object store without write access) is named before
        any work, not from inside a Ray task as a failure to read the input."""
        from rayline.errors import StorageError

        probe = f".write-check-{uuid.uuid4().hex[:8]}"
        try:
            self.write_bytes(b"", probe)
            self.delete_file(probe)
        except (OSError, pa.ArrowException) as e:
            raise StorageError(f"storage.root {self.root} cannot be written: {str(e).splitlines()[0][:300]}") from None

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.read_bytes(*parts))

    def write_json(self, obj: Any, *parts: str) -> None:
        self.write_bytes((json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode(), *parts)

    def create_exclusive(self, data: bytes, *parts: str) -> bool:
        """Create a file only if it does not exist yet; False if another writer got there first.

        This is the one primitive every concurrent write in rayline rests on (version numbers,
        alias changes), so it must be atomic on the store itself, content included (a reader
        that sees the name must see the whole file): locally the content is written to a private
        file and hard-linked to the name, which fails if the name exists (POSIX, NFS); on S3 and
        S3-compatible stores a conditional PUT (`If-None-Match: *`).
        pyarrow cannot send that header, so S3 goes through boto3. Other object stores fall
        back to check-then-write, which two simultaneous writers can both pass (logged).
        """
        final = self.path(*parts)
        self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        if self.is_local:
            tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, final)  # O_EXCL would expose an empty file between create and write
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            return True
        if self.fs.type_name == "s3":
            return self._s3_put_if_absent(data, final)
        _warn_best_effort(self.fs.type_name)
        if self.exists(*parts):
            return False
        self.write_bytes(data, *parts)
        return True

    def _s3_put_if_absent(self, data: bytes, path: str) -> bool:
        from botocore.exceptions import ClientError

        bucket, _, key = path.partition("/")
        client = _s3_client(self.root.partition("?")[2], getattr(self.fs, "region", None) or "")
        for attempt in range(20):
            try:
                client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
                return True
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code", "")
                if code in ("PreconditionFailed", "412"):
                    return False
                # 409: another conditional write to this key is in flight; its outcome decides.
                if code not in ("ConditionalRequestConflict", "409") or attempt == 19:
                    raise
                time.sleep(0.05 * (attempt + 1))
        return False

    def checksums(self, *parts: str, skip: tuple[str, ...] = ()) -> dict[str, dict]:
        """{relative path: {sha256, bytes}} of every file under a directory (for a manifest)."""
        base = self.path(*parts).rstrip("/") + "/"
        out = {}
        for p in self.list_files(*parts):
            rel = p[len(base):]
            if rel not in skip:
                out[rel] = {"sha256": self.sha256(p, absolute=True), "bytes": self.fs.get_file_info(p).size}
        return out

    def mismatches(self, files: dict[str, dict], *parts: str) -> list[str]:
        """Files of a manifest that are missing or differ (size first: cheap), with the reason."""
        bad = []
        for rel, entry in sorted(files.items()):
            info = self.fs.get_file_info(self.path(*parts, rel))
            if info.type == pafs.FileType.NotFound:
                bad.append(f"{rel} is missing")
            elif info.size != entry["bytes"]:
                bad.append(f"{rel} has {info.size} bytes, expected {entry['bytes']}")
            elif self.sha256(*parts, rel) != entry["sha256"]:
                bad.append(f"{rel} has a different SHA-256 than recorded")
        return bad

    def sha256(self, *parts: str, absolute: bool = False) -> str:
        """Hex SHA-256 of a file, streamed (model weights and dataset files can be large)."""
        h = hashlib.sha256()
        with self.fs.open_input_stream(parts[0] if absolute else self.path(*parts)) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return h.hexdigest()

    # ------------------------------------------------------------------ directories
    def temp_dir(self, *parts: str) -> str:
        """A fresh relative path beside `parts` for staging a directory before publishing it."""
        rel = "/".join(p.strip("/") for p in parts)
        head, _, last = rel.rpartition("/")
        name = f".tmp-{last}-{int(time.time())}-{uuid.uuid4().hex[:10]}"
        return f"{head}/{name}" if head else name

    def mark_complete(self, *parts: str) -> None:
        self.write_bytes(b"", *parts, SUCCESS_MARKER)

    def publish(self, tmp_rel: str, final_rel: str) -> str | None:
        """Move a finished staging directory into place, replacing an older one.

        Returns where the older copy was retired to (local disks; sweep it or delete it), if any.
        """
        if not self.is_local:
            self._publish_by_copy(tmp_rel, final_rel)
            return None
        self.mark_complete(tmp_rel)
        src, dst = self.path(tmp_rel), self.path(final_rel)
        retired = None
        if self.exists(final_rel):
            # Retire the old copy first; if we die between the two moves the old copy is still
            # on disk (under .old-*) and the next run simply rebuilds.
            retired = self.temp_dir(final_rel).replace(".tmp-", ".old-")
            self.fs.move(dst, self.path(retired))
        self.fs.create_dir(dst.rsplit("/", 1)[0], recursive=True)
        self.fs.move(src, dst)
        return retired

    def _publish_by_copy(self, tmp_rel: str, final_rel: str) -> None:
        """Object stores cannot rename a prefix: copy object by object (server-side), marker last.

        The old copy's marker goes first, so no reader takes a half-replaced directory for a
        finished one; a crash part-way leaves an unmarked directory that the next run rebuilds.
        """
        if self.exists(final_rel):
            self.delete_file(final_rel, SUCCESS_MARKER)
            self.fs.delete_dir(self.path(final_rel))
        self._copy_tree(tmp_rel, final_rel, skip=SUCCESS_MARKER)
        self.mark_complete(final_rel)
        self.fs.delete_dir(self.path(tmp_rel))

    def move_dir(self, src_rel: str, dst_rel: str) -> None:
        """Rename a directory: a rename on local disks, a copy + delete on object stores."""
        if self.is_local:
            self.fs.move(self.path(src_rel), self.path(dst_rel))
            return
        self._copy_tree(src_rel, dst_rel)
        self.fs.delete_dir(self.path(src_rel))

    def _copy_tree(self, src_rel: str, dst_rel: str, skip: str | None = None) -> None:
        src = self.path(src_rel).rstrip("/") + "/"
        for info in self.fs.get_file_info(pafs.FileSelector(src, recursive=True)):
            if info.type == pafs.FileType.File and info.base_name != skip:
                self.fs.copy_file(info.path, self.path(dst_rel, info.path[len(src):]))

    # ------------------------------------------------------------------ Parquet
    def write_parquet(self, table: pa.Table, *parts: str) -> None:
        """One table as one Parquet file, written in place: for a staging directory, which
        nobody reads before it is published."""
        path = self.path(*parts)
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(path) as f:
            pq.write_table(table, f)

    def parquet_rows(self, paths: list[str]) -> list[int]:
        """Rows in each Parquet file (full paths, as `list_files` gives them), from its footer."""
        return footer_rows(self.fs, paths)

    def delete_dir(self, *parts: str) -> None:
        if self.exists(*parts):
            self.fs.delete_dir(self.path(*parts))

    def delete_file(self, *parts: str) -> None:
        if self.exists(*parts):
            self.fs.delete_file(self.path(*parts))

    def clean_stale(self, *parts: str, older_than_s: float = 6 * 3600) -> None:
        """Remove leftovers (.tmp-*, .old-*) of interrupted runs under a directory.

        Only old ones: a concurrent run may be writing a young .tmp-* right now. The age comes
        from the creation time in the name (see `temp_dir`), else the store's mtime.
        """
        for info in self._entries(*parts):
            if not info.base_name.startswith((".tmp-", ".old-")):
                continue
            if time.time() - staging_created(info) < older_than_s and not info.base_name.startswith(".old-"):
                continue
            try:
                if info.type == pafs.FileType.Directory:
                    self.fs.delete_dir(info.path)
                else:
                    self.fs.delete_file(info.path)
            except OSError:
                if self.fs.get_file_info(info.path).type != pafs.FileType.NotFound:
                    raise  # else a concurrent sweep removed it first

    def _entries(self, *parts: str) -> list[pafs.FileInfo]:
        """A directory's entries with their type and mtime, [] if it does not exist. Locally one
        entry at a time: Arrow fails the whole listing, naming the directory, when an entry
        vanishes between listing and stat (a concurrent writer renaming its staging)."""
        if not self.is_local:
            return self.fs.get_file_info(pafs.FileSelector(self.path(*parts), allow_not_found=True))
        base = self.path(*parts)
        out = []
        for name in self.list_dir(*parts):
            info = self.fs.get_file_info(f"{base}/{name}")
            if info.type != pafs.FileType.NotFound:
                out.append(info)
        return out


def staging_created(info: pafs.FileInfo) -> float:
    """Creation time of a staging entry: from its name, else its mtime, else 0 (old)."""
    m = _STAGING_AGE.match(info.base_name)
    if m:
        return float(m.group(1))
    return info.mtime.timestamp() if info.mtime else 0.0


@functools.lru_cache(maxsize=8)
def _s3_client(query: str, region: str):
    """A boto3 client for the store a root URI names (its query: endpoint_override, scheme, ...)."""
    import boto3

    q = dict(urllib.parse.parse_qsl(query))
    endpoint = q.get("endpoint_override")
    if endpoint and "://" not in endpoint:
        endpoint = f"{q.get('scheme', 'https')}://{endpoint}"
    return boto3.client("s3", endpoint_url=endpoint, region_name=q.get("region") or region or None,
                        aws_access_key_id=q.get("access_key"), aws_secret_access_key=q.get("secret_key"),
                        aws_session_token=q.get("session_token"))


@functools.lru_cache(maxsize=None)
def _warn_best_effort(fs_type: str) -> None:
    log.warning("storage %s: no atomic create-if-absent; concurrent registry writers are not "
                "serialised on this store (use a local/NFS path or S3)", fs_type)
