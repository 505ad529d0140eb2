"""Why a model answered what it did: per-prediction contributions in the client's own field names.

Contributions are on the model's margin (the log-odds for binary, the explained class's margin
for multiclass, the target's units for regression: the standardized margin times the training
std, with the mean in the base), and `base + sum(contributions) == margin` for every row.

- XGBoost: exact TreeSHAP from the booster itself (`pred_contribs`), nothing approximated.
- MLP: integrated gradients from the training-mean input (standardized numerics at 0, missing
  flags at their training rate, each categorical at its frequency-weighted mean embedding) to the
  row, with Gauss-Legendre quadrature over the path. What the quadrature leaves over (IG's
  completeness gap, ~1e-3 of the margin at 16 points here) is spread over the fields in
  proportion to their |contribution|, so the sum is exact; `gap` reports its size per row.

A model input belongs to one raw field (a numeric's value and its missing flag, a time field's
hour/day/month/holiday parts, a categorical's code or embedding): contributions are summed back
to the field the client sent. Plain numpy and torch: no new dependency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rayline.features.spec import LINEAR_PARTS, MISSING_INDEX, OOV_INDEX, FeatureSpec, ModelInputs

IG_POINTS = 16
IG_CHUNK_ROWS = 1024  # rows per quadrature pass: IG_POINTS x rows x width floats at a time


def input_fields(spec: FeatureSpec) -> list[str]:
    """The raw field of each model input column: the `num` columns in order, then `cat`."""
    out: list[str] = []
    for f in spec.numeric:
        out += [f.name] * (2 if f.missing_indicator else 1)
    for t in spec.time:
        for p in t.parts:
            out += [t.name] * (1 if p in LINEAR_PARTS else 2)
    return out + [c.name for c in spec.categorical]


def fields(spec: FeatureSpec) -> list[str]:
    """The fields explanations name, in the request contract's order."""
    return spec.input_columns


def grouping(spec: FeatureSpec, columns: list[str]) -> np.ndarray:
    """(len(columns), len(fields)) 0/1 matrix summing per-column values into per-field ones."""
    names = fields(spec)
    index = {n: i for i, n in enumerate(names)}
    g = np.zeros((len(columns), len(names)), dtype=np.float64)
    g[np.arange(len(columns)), [index[c] for c in columns]] = 1.0
    return g


@dataclass
class Explanations:
    """Per row: base + contributions.sum(axis=1) == margin (the explained output's)."""

    fields: list[str]
    base: np.ndarray           # (n,)
    margin: np.ndarray         # (n,)
    contributions: np.ndarray  # (n, len(fields))
    units: str                 # "log-odds", "class margin", "target" or "log1p(target)"
    explained: list | None = None  # multiclass: the class each row's explanation is for
    gap: np.ndarray | None = None  # MLP: what the quadrature left over, before it was spread
    lookups: dict[str, str] | None = None  # field -> the lookup that provides it (weather's temp, ...)

    def __len__(self) -> int:
        return len(self.base)

    def records(self, start: int = 0, stop: int | None = None) -> list[dict]:
        """The JSON answer's `explanation` objects for rows [start, stop)."""
        stop = len(self) if stop is None else stop
        out = []
        for i in range(start, stop):
            e = {"base": float(self.base[i]), "margin": float(self.margin[i]), "units": self.units,
                 "contributions": dict(zip(self.fields, map(float, self.contributions[i])))}
            if self.explained is not None:
                e["class"] = self.explained[i]
            if self.lookups:
                e["lookups"] = self.lookups  # which fields were looked up, and where (unless the client sent them)
            out.append(e)
        return out

    def mean_abs(self) -> dict[str, float]:
        """The global picture: mean |contribution| per field, largest first."""
        m = np.abs(self.contributions).mean(axis=0) if len(self) else np.zeros(len(self.fields))
        return dict(sorted(zip(self.fields, map(float, m)), key=lambda kv: -kv[1]))


def concat(parts: list[Explanations]) -> Explanations:
    first = parts[0]
    cat = lambda name: None if getattr(first, name) is None else np.concatenate([getattr(e, name) for e in parts])  # noqa: E731
    return Explanations(first.fields, cat("base"), cat("margin"), cat("contributions"), first.units,
                        None if first.explained is None else [c for e in parts for c in e.explained], cat("gap"),
                        first.lookups)


def explain_booster(spec: FeatureSpec, booster, inputs: ModelInputs, approx: bool = False) -> Explanations:
    """Exact TreeSHAP (XGBoost's pred_contribs): one column per model input plus the bias. With
    `approx`, XGBoost's path attribution (Saabas): additive too, far cheaper, not Shapley values."""
    from rayline.model import boosted

    n = len(inputs)
    contribs = np.asarray(booster.predict(boosted.dmatrix(spec, inputs.num, inputs.cat), pred_contribs=True,
                                          approx_contribs=approx), dtype=np.float64)
    explained = None
    if contribs.ndim == 3:  # multiclass: (n, classes, inputs + 1); explain each row's predicted class
        k = contribs.sum(axis=2).argmax(axis=1)
        contribs = contribs[np.arange(n), k]
        explained = [(spec.label.classes or [])[j] for j in k]
    per_input, bias = contribs[:, :-1], contribs[:, -1]
    return _finish(spec, per_input, bias, contribs.sum(axis=1), explained)


def _writable(a: np.ndarray) -> np.ndarray:
    """Contiguous and writable: torch warns on (and may not write to) a read-only array, such as
    one viewing Arrow memory; that one is copied."""
    return np.ascontiguousarray(a) if a.flags.writeable else np.array(a, order="C")


def explain_network(spec: FeatureSpec, net, inputs: ModelInputs, device=None) -> Explanations:
    """Integrated gradients on the network's margin, from the training-mean input."""
    import torch

    device = device or next(net.parameters()).device
    num = torch.from_numpy(_writable(inputs.num)).to(device)
    cat = torch.from_numpy(_writable(inputs.cat)).to(device)
    nodes, weights = np.polynomial.legendre.leggauss(IG_POINTS)
    alphas = torch.tensor((nodes + 1) / 2, dtype=torch.float32, device=device)
    wts = torch.tensor(weights / 2, dtype=torch.float32, device=device)
    with torch.no_grad():
        z = net.embed(num, cat)
        b = _baseline(spec, net, device).expand_as(z)
        out = net.from_embedded(z)
        k = out.argmax(dim=1) if out.ndim == 2 else None
        margin = _pick(out, k)
        base = _pick(net.from_embedded(b[:1]).expand(len(z), *out.shape[1:]) if len(z) else out, k)
    grads = torch.zeros_like(z)
    for lo in range(0, len(z), IG_CHUNK_ROWS):
        zc, bc = z[lo:lo + IG_CHUNK_ROWS], b[lo:lo + IG_CHUNK_ROWS]
        kc = None if k is None else k[lo:lo + IG_CHUNK_ROWS].repeat(IG_POINTS)
        path = (bc.unsqueeze(0) + alphas.view(-1, 1, 1) * (zc - bc).unsqueeze(0)).reshape(-1, z.shape[1])
        path.requires_grad_(True)
        with torch.enable_grad():
            picked = _pick(net.from_embedded(path), kc)
            (g,) = torch.autograd.grad(picked.sum(), path)
        grads[lo:lo + IG_CHUNK_ROWS] = (g.reshape(IG_POINTS, len(zc), -1) * wts.view(-1, 1, 1)).sum(dim=0)
    per_column = ((z - b) * grads).double().cpu().numpy()
    margin_np, base_np = margin.double().cpu().numpy(), base.double().cpu().numpy()
    # completeness: spread what the quadrature left over, in proportion to |contribution|
    gap = margin_np - base_np - per_column.sum(axis=1)
    weight = np.abs(per_column)
    total = weight.sum(axis=1, keepdims=True)
    share = np.divide(weight, total, out=np.full_like(weight, 1.0 / max(weight.shape[1], 1)), where=total > 0)
    per_column = per_column + share * gap[:, None]
    explained = None if k is None else [(spec.label.classes or [])[j] for j in k.cpu().numpy()]
    columns = input_fields(spec)[:len(spec.numeric_inputs)] + [
        c.name for c, e in zip(spec.categorical, net.embeddings) for _ in range(e.embedding_dim)]
    exp = _finish(spec, per_column, base_np, margin_np, explained, columns)
    exp.gap = gap
    return exp


def _pick(out, k):
    return out if k is None else out.gather(1, k.view(-1, 1)).squeeze(1)


def _baseline(spec: FeatureSpec, net, device):
    """The training-mean input, embedded: (1, width)."""
    import torch

    num = []
    for f in spec.numeric:
        num.append(0.0)  # standardized: the training mean is 0
        if f.missing_indicator:
            num.append(f.null_fraction)
    for t in spec.time:
        for p in t.parts:
            num += [0.0] if p in LINEAR_PARTS else [0.0, 0.0]  # a cycle's mean; holidays are rare
    parts = [torch.tensor([num], dtype=torch.float32, device=device)]
    for c, emb in zip(spec.categorical, net.embeddings):
        w = np.zeros(c.cardinality, dtype=np.float32)
        w[MISSING_INDEX], w[OOV_INDEX] = c.null_fraction, c.oov_fraction
        w[OOV_INDEX + 1:OOV_INDEX + 1 + len(c.frequencies)] = c.frequencies
        w = w / w.sum() if w.sum() > 0 else np.full_like(w, 1.0 / len(w))
        parts.append(torch.from_numpy(w).to(device).view(1, -1) @ emb.weight)
    return torch.cat(parts, dim=1).detach()


def _finish(spec: FeatureSpec, per_column: np.ndarray, base: np.ndarray, margin: np.ndarray, explained,
            columns: list[str] | None = None) -> Explanations:
    """Sum columns into fields; regression margins into the target's units."""
    contributions = per_column @ grouping(spec, columns or input_fields(spec))
    base, margin = np.asarray(base, dtype=np.float64), np.asarray(margin, dtype=np.float64)
    label = spec.label
    units = {"binary": "log-odds", "multiclass": "class margin"}.get(label.task, "target")
    scale = label.target_scale()
    if scale is not None:
        contributions, base = contributions * scale[1], base * scale[1] + scale[0]
        margin = margin * scale[1] + scale[0]
    if label.task == "regression" and label.transform == "log1p":
        units = "log1p(target)"
    return Explanations(fields(spec), base, margin, contributions, units, explained, lookups=lookup_sources(spec))


def lookup_sources(spec: FeatureSpec) -> dict[str, str]:
    """Each field a lookup provides -> that lookup's name (as responses and /drift name it)."""
    from rayline.features.lookups import join_name

    out = {j.output_name(c): join_name(j) for j in spec.joins for c in j.columns if c not in j.keys.values()}
    out.update({c.name: c.name for c in spec.counts})
    return {k: v for k, v in out.items() if k in fields(spec)}
