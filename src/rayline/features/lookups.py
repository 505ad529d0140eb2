"""The lookups a model's features come from, and the one code that joins and counts.

The ingest builds each row's features from the primary table plus lookups: each `data.joins`
dimension table (weather by origin and hour, the aircraft by tail number, ...) and each
`data.counts` table (departures per origin and hour, ...). A client of the endpoint, or a batch
of raw files, has only the primary table's fields: `Lookups.apply` gives those rows the same
joined and counted columns with the same code the ingest runs (`attach`), from the snapshot the
ingest wrote with the model's dataset (`<dataset>/lookups/*.parquet`, checksummed in its
manifest, referenced from each version's lineage).

Broadcast left joins, not a general hash join: a dimension's keys are unique (duplicates were
quarantined by the ingest), so each row maps to at most one dimension row. Each key column is
turned into a dense code with `index_in` against that column's distinct values; a composite key
folds its codes pairwise, re-densifying after each step (so codes stay below the dimension's
row count and cannot overflow); the final code indexes the dimension's rows. This keeps row
order without a sort and costs about half of Acero's join + sort (35 vs 65 ms for the three
flights joins of a 262k-row batch). A fold step re-densifies through a flat table (previous
code x this key's code -> dense code) where that table is small next to the dimension:
`index_in` would hash the whole step's value set on every call (69 ms against a 1.4M-value set
for a 250k-row batch; the table lookup takes 0.3 ms).

A value the client sends for a looked-up column wins over the lookup's (a forecast, a what-if);
a key that finds no row leaves the columns missing (imputed like any missing value) and is
reported per lookup, never refused.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayline.config import CountFeature, JoinConfig
from rayline.errors import InputError
from rayline.features.coerce import ARROW_TYPES, coerce


def kind_of(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "timestamp"
    if pa.types.is_boolean(t):
        return "bool"
    return "string"


@dataclass
class PreparedDimension:
    """A dimension table ready for lookups: its output columns and the key code tables."""

    table: str
    columns: pa.Table  # output columns (renamed), one row per dimension row
    key_kinds: list[str]  # canonical kind of each dimension key column, in join.keys order
    distinct: list[pa.Array]  # distinct values of each key column
    folded: list[pa.Array | None]  # distinct (previous code * len(distinct[k]) + code[k]) per step k >= 1
    row_of_code: pa.Array  # final dense code -> dimension row
    source: pa.Table | None = field(default=None, repr=False)  # keys + columns as validated: what a snapshot stores
    keys: list[pa.Array] | None = field(default=None, repr=False)  # the coerced key columns, per dimension row
    _index: dict | None = field(default=None, init=False, repr=False, compare=False)
    index_bytes: int = field(default=0, init=False, repr=False, compare=False)  # once the index is built
    _null_row: pa.Table | None = field(default=None, init=False, repr=False, compare=False)
    _dense: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # fold step -> table
    _ints: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # key -> integer view

    @property
    def num_rows(self) -> int:
        return self.columns.num_rows

    def take(self, rows: pa.Array | list) -> pa.Table:
        """The output columns at `rows` (null where a row is null). One row, the common case of a
        request, is a zero-copy slice (or a cached all-null row), not a gather (~25 µs each)."""
        if len(rows) != 1:
            return self.columns.take(rows if isinstance(rows, pa.Array) else pa.array(rows, pa.int64()))
        row = rows[0] if isinstance(rows, list) else rows[0].as_py()
        if row is not None:
            return self.columns.slice(row, 1)
        if self._null_row is None:
            schema = self.columns.schema
            self._null_row = pa.Table.from_arrays([pa.nulls(1, f.type) for f in schema], schema=schema)
        return self._null_row

    def index(self) -> dict:
        """key -> dimension row (`index_key`), built once (a few requests' rows are looked up one
        by one: `index_in` hashes the whole value set on every call, ~6 ms for a 26k-row dimension).
        Its keys are plain values or strings and its values ints, so the garbage collector never
        tracks it: with a tuple per key the flights' 250k-row count made every full collection
        of a replica take ~150 ms, and the indexes cost 127 MB."""
        if self._index is None:
            cols = [key_values(c) for c in self.keys or []]
            keys = cols[0] if len(cols) == 1 else map(index_key, zip(*cols))
            index = {k: i for i, k in enumerate(keys)}
            self.index_bytes = sys.getsizeof(index) + sum(map(sys.getsizeof, index))  # the dict and its keys
            self._index = index
        return self._index

    @property
    def table_bytes(self) -> int:
        """What the fold tables and integer key views built so far hold."""
        return sum(t.nbytes for t in self._dense.values() if t is not None) + \
            sum(v[0].nbytes + v[1].nbytes for v in self._ints.values() if v is not None)

    def fold(self, i: int, prev: np.ndarray, code: np.ndarray) -> np.ndarray:
        """Fold step `i` (>= 1) of a composite key: the dense code of (the previous steps' code,
        key i's code) per row, -1 where either is -1 or the pair is no dimension key."""
        valid = (prev >= 0) & (code >= 0)
        step = np.where(valid, prev.astype(np.int64) * len(self.distinct[i]) + code, 0)
        table = self._dense_table(i)
        if table is None:
            out = pc.index_in(step, value_set=self.folded[i]).fill_null(-1).to_numpy()
        else:
            out = table[step]
        return np.where(valid, out, -1)

    def _dense_table(self, i: int) -> np.ndarray | None:
        """Step `i`'s flat table (int32, -1: no such pair), built on first use; None where it
        would be large next to the dimension (then `index_in` against the step's values)."""
        if i not in self._dense:
            before = len(self.folded[i - 1]) if i > 1 else len(self.distinct[0])
            size = before * len(self.distinct[i])
            table = None
            if size <= DENSE_PER_ROW * self.num_rows + DENSE_MIN:
                table = np.full(size, -1, dtype=np.int32)
                table[self.folded[i].to_numpy(zero_copy_only=False)] = np.arange(len(self.folded[i]), dtype=np.int32)
            self._dense[i] = table
        return self._dense[i]

    def int_codes(self, i: int, probe: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
        """Key i's codes for an integer probe, matched as its text (`pc.cast` to string, which
        the key's distinct texts are) without spelling it: against the distinct texts that are
        an integer's canonical spelling, read as integers. None where that is not exact (the
        key is not text, or the probe has values of 19 digits)."""
        if i not in self._ints:
            d = self.distinct[i]
            view = None
            if pa.types.is_string(d.type) or pa.types.is_large_string(d.type):
                canonical = pc.fill_null(pc.match_substring_regex(d, r"^-?(0|[1-9][0-9]{0,17})$"), False)
                at = np.flatnonzero(canonical.to_numpy(zero_copy_only=False)).astype(np.int64)
                view = (pc.cast(d.filter(canonical), pa.int64()), at)
            self._ints[i] = view
        view = self._ints[i]
        if view is None:
            return None
        low, high = pc.min_max(probe).values()
        if low.is_valid and (low.as_py() <= -10**18 or high.as_py() >= 10**18):
            return None  # outside what the integer view holds
        if probe.type != pa.int64():
            probe = pc.cast(probe, pa.int64())
        pos = pc.index_in(probe, value_set=view[0]).fill_null(-1).to_numpy(zero_copy_only=False)
        return np.where(pos >= 0, view[1][np.maximum(pos, 0)], -1)

    def rows(self, codes: list[np.ndarray]) -> pa.Array:
        """The dimension row (int64, null for none) of each batch row, from each key's codes."""
        code = codes[0]
        for i in range(1, len(codes)):
            code = self.fold(i, code, codes[i])
        row_of_code = self.row_of_code.to_numpy(zero_copy_only=False)
        found = code >= 0
        if not len(row_of_code):
            return pa.nulls(len(code), pa.int64())
        return pa.array(np.where(found, row_of_code[np.where(found, code, 0)], 0), pa.int64(), mask=~found)


def prepare_dimension(dim: pa.Table, join: JoinConfig) -> PreparedDimension:
    """Index a validated dimension table for `left_join`. Its keys must be unique and non-null."""
    right_keys = list(join.keys.values())
    keys = [coerce(dim.column(k), kind_of(dim.schema.field(k).type))[0] for k in right_keys]
    has_key = np.ones(dim.num_rows, dtype=bool)
    for k in keys:
        has_key &= pc.is_valid(k).to_numpy(zero_copy_only=False)
    if not has_key.all():  # a null key matches nothing (SQL semantics)
        dim, keys = dim.filter(pa.array(has_key)), [k.filter(pa.array(has_key)) for k in keys]
    distinct, folded, code = [], [], None
    for k in keys:
        uniq = pc.unique(k)
        c = pc.index_in(k, value_set=uniq).cast(pa.int64())
        distinct.append(uniq)
        if code is None:
            code = c
            folded.append(None)
        else:
            step = pc.add(pc.multiply(code, len(uniq)), c)
            step_uniq = pc.unique(step)
            folded.append(step_uniq)
            code = pc.index_in(step, value_set=step_uniq).cast(pa.int64())
    codes = code.to_numpy(zero_copy_only=False) if code is not None else np.zeros(0, np.int64)
    n_codes = len(folded[-1]) if folded and folded[-1] is not None else (len(distinct[0]) if distinct else 0)
    if n_codes != dim.num_rows:
        raise InputError(f"join with {join.table!r}: key ({', '.join(right_keys)}) is not unique in the dimension table")
    row_of_code = np.empty(n_codes, dtype=np.int64)
    row_of_code[codes] = np.arange(dim.num_rows, dtype=np.int64)
    out_cols = [c for c in join.columns if c not in right_keys]
    # one chunk: a gather across a Parquet file's many row groups costs several times more
    columns = dim.select(out_cols).rename_columns([join.output_name(c) for c in out_cols]).combine_chunks()
    source = dim.select(list(dict.fromkeys([*right_keys, *(c for c in join.columns if c in dim.schema.names)])))
    return PreparedDimension(join.table, columns, [kind_of(k.type) for k in keys], distinct, folded, pa.array(row_of_code),
                             source, [k.combine_chunks() if isinstance(k, pa.ChunkedArray) else k for k in keys])


DENSE_PER_ROW = 16  # a fold step's flat table may hold this many int32 per dimension row ...
DENSE_MIN = 1 << 16  # ... or this many, for a small dimension


def key_codes(probe: pa.Array | pa.ChunkedArray, distinct: pa.Array) -> np.ndarray:
    """Each probe value's position in `distinct` (int64), -1 where it is not there or null."""
    return pc.index_in(probe, value_set=distinct).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


SMALL_LOOKUP = 256  # rows up to which a lookup goes through the dimension's dictionary


def index_key(parts: tuple):
    """A multi-column key as one string: each part's text with its length in front (no separator
    can be forged by a value). Parts are of their column's kind on both sides, so equal keys
    give equal strings."""
    return "|".join(map(_key_part, map(_part_text, parts)))


def _key_part(text: str) -> str:
    return f"{len(text)}:{text}"


def _part_text(v) -> str:
    if isinstance(v, str):
        return v
    if v is None:
        return "\x00null"  # never in an index (keys are non-null): a probe with a null key misses
    return v.isoformat() if hasattr(v, "isoformat") else repr(v)


def key_values(col: pa.Array | pa.ChunkedArray) -> list:
    """A key column's values as Python for the index: times as their integer ticks (a tz-aware
    datetime costs ~3 µs to build and another to spell; both sides of a lookup have the same
    Arrow type, so equal times give equal ticks)."""
    t = col.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        ticks = pa.int64() if pa.types.is_timestamp(t) or pa.types.is_date64(t) else pa.int32()
        chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
        return [v for c in chunks for v in c.view(ticks).to_pylist()]
    return col.to_pylist()


def _probe(batch: pa.Table, column: str, kind: str, memo: dict) -> list:
    """A key column's values as Python, in the dimension's key kind (once per call: `memo`). A
    column already of that type (the contract typed it) is not coerced again."""
    got = memo.get((column, kind))
    if got is None:
        col = batch.column(column)
        if col.type != ARROW_TYPES[kind]:
            col = coerce(col, kind)[0]
        got = memo[(column, kind)] = key_values(col)
    return got


def small_rows(batch: pa.Table, dim: PreparedDimension, join: JoinConfig, memo: dict | None = None) -> list:
    """`lookup_rows` for a few rows, as a Python list (None: no match), through the dimension's
    dictionary: per-call overhead, not data, is the cost of a request."""
    memo = {} if memo is None else memo
    index = dim.index()
    probes = [_probe(batch, lk, dim.key_kinds[i], memo) for i, lk in enumerate(join.keys)]
    if len(probes) == 1:
        return [None if k is None else index.get(k) for k in probes[0]]
    return [index.get(index_key(k)) for k in zip(*probes)]


def lookup_rows(batch: pa.Table, dim: PreparedDimension, join: JoinConfig, memo: dict | None = None) -> pa.Array:
    """For each batch row, the matching dimension row (int64), or null when there is none.
    `memo`: probe values already coerced, by (column, kind), shared by the lookups of one call."""
    if batch.num_rows <= SMALL_LOOKUP and dim.keys is not None:
        return pa.array(small_rows(batch, dim, join, memo), pa.int64())
    # Align key types (a CSV may read a key as int on one side and string on the other).
    return dim.rows([key_codes(coerce(batch.column(lk), dim.key_kinds[i])[0], dim.distinct[i])
                     for i, lk in enumerate(join.keys)])


def join_columns(batch: pa.Table, dim: PreparedDimension, join: JoinConfig,
                 memo: dict | None = None) -> tuple[list[str], list, np.ndarray]:
    """The columns `dim` adds to `batch`'s rows (names, arrays, in batch order) and the mask of
    rows that found no match."""
    if batch.num_rows <= SMALL_LOOKUP and dim.keys is not None:
        found = small_rows(batch, dim, join, memo)
        unmatched = np.fromiter((r is None for r in found), dtype=bool, count=len(found))
        matched = dim.take(found)
    else:
        rows = lookup_rows(batch, dim, join, memo)
        unmatched = pc.is_null(rows).to_numpy(zero_copy_only=False)
        matched = dim.take(rows)
    return matched.schema.names, matched.columns, unmatched


def left_join(batch: pa.Table, dim: PreparedDimension, join: JoinConfig) -> tuple[pa.Table, np.ndarray]:
    """Left-join `dim` (from `prepare_dimension`) onto `batch`, keeping batch order.

    Returns the joined batch and a mask of rows that found no match.
    """
    names, cols, unmatched = join_columns(batch, dim, join)
    _no_clash(join, names, set(batch.schema.names))
    return pa.Table.from_arrays([*batch.columns, *cols], names=[*batch.schema.names, *names]), unmatched


def _no_clash(join: JoinConfig, names: list[str], existing: set[str]) -> None:
    clash = [c for c in names if c in existing]
    if clash:
        raise InputError(f"join with {join.table!r}: column {clash[0]!r} already exists in the primary table; "
                         f"give it another name with joins[].rename")


def join_name(j: JoinConfig) -> str:
    """A join as responses and metrics name it: its table and left keys (a table may be joined twice)."""
    return f"{j.table}({','.join(j.keys)})"


# ---------------------------------------------------------------------- counts
def count_join(c: CountFeature) -> JoinConfig:
    """A count feature as the join that looks it up (its keys on both sides, its count the column)."""
    key = (c.name, tuple(c.by))
    join = _COUNT_JOINS.get(key)
    if join is None:
        join = _COUNT_JOINS[key] = JoinConfig(table=f"counts:{c.name}", keys={k: k for k in c.by}, columns=[c.name])
    return join


_COUNT_JOINS: dict[tuple, JoinConfig] = {}  # built once per count feature (a request looks them up each time)


def key_text(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Count keys are matched as text (the counts were keyed as text): a whole float reads as the
    integer it is (5.0 -> "5"), as an integer column's value does."""
    return pc.cast(col, pa.string())


def _key_text_small(col: pa.Array | pa.ChunkedArray) -> list:
    """`key_text(col).to_pylist()`, spelled in Python where that is certainly the same text (text,
    integers, whole floats in [1, 1e9)); other columns go through Arrow's cast."""
    t = col.type
    values = col.to_pylist()
    if pa.types.is_string(t):
        return values
    if pa.types.is_integer(t):
        return [None if v is None else str(v) for v in values]
    if pa.types.is_floating(t) and all(v is None or (v.is_integer() and 1 <= abs(v) < 1e9) for v in values):
        return [None if v is None else str(int(v)) for v in values]
    return key_text(col).to_pylist()


def small_count_rows(keys: pa.Table, counts: dict[str, PreparedDimension],
                     features: tuple[CountFeature, ...] | list[CountFeature]) -> dict[str, list]:
    """For a few rows: each count's row in its table per row (None: no count), the keys read as
    text in Python, each key column spelled once for all the counts that use it."""
    text: dict[str, list] = {}
    parts: dict[str, list] = {}  # each key column's `index_key` parts
    out = {}
    for c in features:
        for k in c.by:
            if k not in text:
                text[k] = _key_text_small(keys.column(k))
        index = counts[c.name].index()
        if len(c.by) == 1:
            out[c.name] = [index.get(k) for k in text[c.by[0]]]
            continue
        for k in c.by:
            if k not in parts:
                parts[k] = [_key_part(_part_text(v)) for v in text[k]]
        out[c.name] = [index.get("|".join(k)) for k in zip(*(parts[k] for k in c.by))]
    return out


def count_columns(keys: pa.Table, counts: dict[str, PreparedDimension],
                  features: tuple[CountFeature, ...] | list[CountFeature]) -> tuple[list[str], list, dict[str, np.ndarray]]:
    """Each count column for `keys`' rows (its keys read as text) and each one's rows with no count."""
    missed, names, cols = {}, [], []
    if keys.num_rows <= SMALL_LOOKUP and all(counts[c.name].keys is not None for c in features):
        # a request's few rows: the keys' text spelled in Python, each count found in its dictionary
        found_rows = small_count_rows(keys, counts, features)
        for c in features:
            found = found_rows[c.name]
            missed[c.name] = np.fromiter((r is None for r in found), dtype=bool, count=len(found))
            names.append(c.name)
            cols.append(counts[c.name].take(found).column(c.name))
        return names, cols, missed
    text: dict[str, pa.Array] = {}  # each key's text, spelled once and only if needed

    def codes(dim: PreparedDimension, i: int, k: str) -> np.ndarray:
        col = keys.column(k)
        if pa.types.is_integer(col.type) and col.type != pa.uint64():
            got = dim.int_codes(i, col)
            if got is not None:
                return got
        if k not in text:
            text[k] = key_text(col)
        return key_codes(text[k], dim.distinct[i])

    for c in features:
        dim = counts[c.name]
        rows = dim.rows([codes(dim, i, k) for i, k in enumerate(c.by)])
        missed[c.name] = pc.is_null(rows).to_numpy(zero_copy_only=False)
        names.append(c.name)
        cols.append(counts[c.name].take(rows).column(c.name))
    return names, cols, missed


def add_counts(typed: pa.Table, keys: pa.Table, counts: dict[str, PreparedDimension],
               features: tuple[CountFeature, ...] | list[CountFeature]) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """Append each count column, its keys read from `keys` as text; and each one's rows with no count."""
    names, cols, missed = count_columns(keys, counts, features)
    return pa.Table.from_arrays([*typed.columns, *cols], names=[*typed.schema.names, *names]), missed


def attach(typed: pa.Table, keys: pa.Table, joins: list[JoinConfig] | tuple[JoinConfig, ...],
           dims: dict, counts: list[CountFeature] | tuple[CountFeature, ...],
           drop: frozenset | set = frozenset()) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """The joins (dims[i] for joins[i]), then the counts (dims[name]) onto `typed`: what the ingest
    does to every batch and what serving and batch inference do to every record. Returns the rows
    each lookup missed, by lookup name (`join_name`, the count's name). The new columns are
    gathered and assembled into one table at the end (a table per lookup cost ~0.1 ms each on a
    one-record request). `drop`: columns of `typed` left out (those the lookups provide)."""
    missed: dict[str, np.ndarray] = {}
    names = typed.schema.names
    if drop:
        kept = [i for i, n in enumerate(names) if n not in drop]
        names, cols = [names[i] for i in kept], [typed.column(i) for i in kept]  # a join keyed by one probes the table so far
    else:
        cols = typed.columns
    primary, existing, memo = set(names), set(names), {}
    for i, j in enumerate(joins):
        # keyed by primary columns as a rule; by an earlier join's column: probe the table so far
        plain = primary.issuperset(j.keys)
        probe = typed if plain else pa.Table.from_arrays(cols, names=names)
        new, arrays, missed[join_name(j)] = join_columns(probe, dims[i], j, memo if plain else None)
        if not existing.isdisjoint(new):
            _no_clash(j, new, existing)
        existing.update(new)
        names += new
        cols += arrays
    if counts:
        new, arrays, count_missed = count_columns(keys, {c.name: dims[c.name] for c in counts}, counts)
        names += new
        cols += arrays
        missed.update(count_missed)
    return pa.Table.from_arrays(cols, names=names), missed


# ---------------------------------------------------------------------- the snapshot
@dataclass
class Lookups:
    """A snapshot loaded for lookups: what `attach` needs, plus its id and size."""

    snapshot: str
    joins: tuple[JoinConfig, ...]
    counts: tuple[CountFeature, ...]
    dims: dict = field(repr=False)
    load_s: float = 0.0
    _plans: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # kinds -> _FewPlan | None

    @classmethod
    def from_tables(cls, snapshot: str, joins, counts, tables: dict, load_s: float = 0.0) -> "Lookups":
        """`tables`: the source table of joins[i] at key i, of each count at its name."""
        dims: dict = {}
        for i, j in enumerate(joins):
            dims[i] = prepare_dimension(tables[i], j)
        for c in counts:
            dims[c.name] = prepare_dimension(tables[c.name], count_join(c))
        return cls(snapshot, tuple(joins), tuple(counts), dims, load_s)

    @property
    def names(self) -> list[str]:
        return [join_name(j) for j in self.joins] + [c.name for c in self.counts]

    @functools.cached_property
    def columns(self) -> list[str]:
        """The columns the lookups provide."""
        return [j.output_name(c) for j in self.joins for c in j.columns if c not in j.keys.values()] + \
            [c.name for c in self.counts]

    @property
    def nbytes(self) -> int:
        """The snapshot's Arrow buffers plus its Python indexes and fold tables (those built so
        far: a replica builds them when it warms up)."""
        return sum(d.columns.nbytes + sum(x.nbytes for x in d.distinct) + d.row_of_code.nbytes
                   + sum(x.nbytes for x in d.folded if x is not None) + d.index_bytes + d.table_bytes
                   for d in self.dims.values())

    def values(self, typed: pa.Table, kinds: tuple, named: set | None = None) -> \
            tuple[dict[str, list], dict[str, np.ndarray]] | None:
        """`apply` for a request's few rows (at most FEW_ROWS), without building a table: each
        looked-up feature as Python values (the client's own value winning), which the transform
        and the drift counts read as they would read those columns' values (`numeric_matrix`,
        the categories' dictionary), and the rows each lookup missed. A row's value is one
        scalar read per column (~0.3 µs), where a joined table cost ~1 µs per column in
        wrappers and ~25 µs to assemble. `kinds`: (feature, kind) pairs of the model's spec
        (`FeatureSpec.raw_kinds`). None where this path does not apply (see `_few_plan`): use `apply`."""
        plan = self._plans.get(kinds, _UNPLANNED)
        if plan is _UNPLANNED:
            plan = self._plans[kinds] = _few_plan(self, kinds)
        if plan is None or typed.num_rows > FEW_ROWS:
            return None
        out: dict[str, list] = {}
        missed: dict[str, np.ndarray] = {}
        memo: dict = {}
        for i, j in enumerate(self.joins):
            rows = small_rows(typed, self.dims[i], j, memo)
            missed[join_name(j)] = np.fromiter((r is None for r in rows), dtype=bool, count=len(rows))
            for name, arr in plan.joins[i]:
                out[name] = [None if r is None else arr[r].as_py() for r in rows]
        if self.counts:
            by_name = dict(plan.counts)
            for name, rows in small_count_rows(typed, self.dims, self.counts).items():
                missed[name] = np.fromiter((r is None for r in rows), dtype=bool, count=len(rows))
                arr = by_name.get(name)
                if arr is not None:
                    out[name] = [None if r is None else arr[r].as_py() for r in rows]
        maybe = plan.columns if named is None else plan.columns.intersection(named)
        present = set(typed.schema.names) if maybe else ()
        for name in maybe:
            if name not in present:
                continue
            sent = typed.column(name)
            if sent.null_count < typed.num_rows:  # where the client sent a value, it wins
                out[name] = [v if v is not None else u for v, u in zip(sent.to_pylist(), out[name])]
        return out, missed

    def apply(self, typed: pa.Table, named: set | None = None) -> tuple[pa.Table, dict[str, np.ndarray]]:
        """The looked-up columns onto checked records; where the client sent a value it wins.
        `named`: the fields the records name, when the caller knows them (a column no record
        names holds no value to keep, and is not inspected: ~1 µs a column on a request)."""
        names = set(typed.schema.names)
        present = [c for c in self.columns if c in names]  # the contract types every feature: mostly all-null
        maybe = present if named is None else [c for c in present if c in named]
        sent = {c: col for c, col in ((c, typed.column(c)) for c in maybe) if col.null_count < typed.num_rows}
        out, missed = attach(typed, typed, self.joins, self.dims, self.counts, drop=frozenset(present))
        if sent:
            cols = [pc.coalesce(sent[c], col.cast(sent[c].type)) if c in sent else col  # the client's type (the
                    for c, col in zip(out.schema.names, out.columns)]                 # contract's): int counts -> float
            out = pa.Table.from_arrays(cols, names=out.schema.names)
        return out, missed


@dataclass(frozen=True)
class _FewPlan:
    """How `Lookups.values` reads each lookup's output columns: (name, its one Arrow chunk) per
    join, and per count; only the columns the transform reads (features)."""
    joins: tuple[tuple[tuple[str, pa.Array], ...], ...]
    counts: tuple[tuple[str, pa.Array], ...]
    columns: frozenset


def _few_plan(lookups: "Lookups", kinds: tuple) -> _FewPlan | None:
    """None when a lookup column is one the transform does not read as a Python value (a time,
    a category that is not text, a number that is not an int or a float), a join probes a
    looked-up column, or a lookup has no dictionary: those requests take `apply`."""
    wanted = dict(kinds)
    provided = set(lookups.columns)
    if any(d.keys is None for d in lookups.dims.values()):
        return None  # no key columns to build a dictionary from: Arrow's path

    def readable(name: str, col: pa.ChunkedArray) -> bool:
        t = col.type
        return (wanted[name] == "float" and (pa.types.is_integer(t) or pa.types.is_floating(t))) or \
            (wanted[name] == "string" and pa.types.is_string(t))

    def chunk(col: pa.ChunkedArray) -> pa.Array:
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()

    joins = []
    for i, j in enumerate(lookups.joins):
        if not provided.isdisjoint(j.keys):
            return None
        cols = lookups.dims[i].columns
        picked = []
        for name, col in zip(cols.schema.names, cols.columns):
            if name not in wanted:
                continue  # not a feature: nothing on the request path reads it
            if not readable(name, col):
                return None
            picked.append((name, chunk(col)))
        joins.append(tuple(picked))
    counts = []
    for c in lookups.counts:
        col = lookups.dims[c.name].columns.column(c.name)
        if c.name in wanted:
            if not readable(c.name, col):
                return None
            counts.append((c.name, chunk(col)))
    names = frozenset(n for picked in joins for n, _ in picked) | frozenset(n for n, _ in counts)
    return _FewPlan(tuple(joins), tuple(counts), names)


FEW_ROWS = 8  # rows up to which looked-up values may travel as Python values (spec.SMALL_ROWS)


def missed_per_row(missed: dict[str, np.ndarray], n: int) -> list[list[str]]:
    """For each of `n` rows, the names of the lookups that found nothing for it."""
    out: list[list[str]] = [[] for _ in range(n)]
    for name, mask in missed.items():
        if not mask.any():  # the common case: a lookup that found every row
            continue
        for r in np.flatnonzero(mask).tolist():
            out[r].append(name)
    return out


def missed_column(missed: dict[str, np.ndarray], n: int) -> pa.Array:
    """`missed_per_row` as one text column for a batch: the names joined by commas, null where
    every lookup found the row. Python joins names once per distinct set of missed lookups."""
    masks = [(name, mask) for name, mask in missed.items() if mask.any()]
    if not masks:
        return pa.nulls(n, pa.string())
    # Each row's set of missed lookups as one integer (bits; re-densified every 30 lookups so it
    # never overflows); the text is built once per distinct set, from its first row, then taken.
    code = np.zeros(n, dtype=np.int64)
    for i, (_, mask) in enumerate(masks):
        if i and i % 30 == 0:
            code = np.unique(code, return_inverse=True)[1].reshape(-1)
        code = code * 2 + mask
    _, first, index = np.unique(code, return_index=True, return_inverse=True)
    texts = pa.array([",".join(name for name, mask in masks if mask[r]) or None for r in first.tolist()], pa.string())
    return texts.take(pa.array(index.reshape(-1).astype(np.int32)))


_UNPLANNED = object()


def fingerprint(files: dict[str, str]) -> str:
    """A snapshot's id from its files' SHA-256 (name -> digest)."""
    return hashlib.sha256("\n".join(f"{k}:{v}" for k, v in sorted(files.items())).encode()).hexdigest()[:16]
