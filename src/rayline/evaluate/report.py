"""report.md with PNG plots (ROC, calibration, loss curves, slices) for a model version."""

from __future__ import annotations

import io
import math

from rayline.evaluate.evaluate import Evaluation


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def render_plots(ev: Evaluation, history: list[dict]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, bytes] = {}
    if history:
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
        epochs = [h["epoch"] for h in history]
        ax[0].plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
        ax[0].plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
        ax[0].set(title="loss", xlabel="epoch")
        ax[0].legend()
        key = next((k for k in history[0] if k.startswith("val_") and k != "val_loss"), None)
        if key:
            ax[1].plot(epochs, [h[key] for h in history], "o-", color="C2")
            ax[1].set(title=key, xlabel="epoch")
        plots["curves.png"] = _png(fig)
    if "roc" in ev.curves:
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(ev.curves["roc"]["fpr"], ev.curves["roc"]["tpr"], label=f"AUC {ev.metrics['auc']:.3f}")
        ax.plot([0, 1], [0, 1], "--", color="grey")
        ax.set(title="ROC (test)", xlabel="false positive rate", ylabel="true positive rate")
        ax.legend(loc="lower right")
        plots["roc.png"] = _png(fig)
        fig, ax = plt.subplots(figsize=(4, 4))
        bins = ev.curves["calibration"]
        ax.plot([b["mean_predicted"] for b in bins], [b["observed_rate"] for b in bins], "o-")
        ax.plot([0, 1], [0, 1], "--", color="grey")
        ax.set(title=f"calibration (ECE {ev.metrics['calibration_error']:.3f})", xlabel="predicted", ylabel="observed")
        plots["calibration.png"] = _png(fig)
    if "pr" in ev.curves:
        pr, thr = ev.curves["pr"], ev.metrics.get("threshold", 0.5)
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(pr["recall"], pr["precision"], label="test")
        ax.plot([ev.metrics["recall"]], [ev.metrics["precision"]], "o", color="C3", label=f"threshold {thr:.3f}")
        ax.axhline(ev.metrics.get("base_rate", 0), color="grey", linestyle="--", label="base rate")
        ax.set(title="precision / recall (test)", xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper right")
        plots["pr.png"] = _png(fig)
    if ev.explanations.get("mean_abs"):
        items = list(ev.explanations["mean_abs"].items())[:15][::-1]
        fig, ax = plt.subplots(figsize=(5, max(2.5, 0.3 * len(items))))
        ax.barh([k for k, _ in items], [v for _, v in items], color="C1")
        ax.set(title=f"mean |contribution| ({ev.explanations['units']})")
        plots["explanations.png"] = _png(fig)
    for col, rows in ev.slices.items():
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(rows)), 3.2))
        ax.bar([str(r["value"]) for r in rows], [r[ev.metric] for r in rows], color="C0")
        ax.axhline(ev.value, color="C3", linestyle="--", label="overall")
        ax.set(title=f"{ev.metric} by {col}", ylabel=ev.metric)
        ax.legend()
        plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
        plots[f"slice_{col}.png"] = _png(fig)
    return plots


def render_markdown(title: str, ev: Evaluation, history: list[dict], lineage: dict, plots: list[str]) -> str:
    m = ev.metrics
    lines = [f"# {title}", "", f"Held-out split: **{ev.split}**, {m.get('rows', 0):,} rows.", "", "## Metrics", "",
             "| metric | model | baseline |", "|---|---|---|"]
    for k, v in m.items():
        if k.startswith("baseline_") or k in ("rows", "train_mean", "train_base_rate", "confusion"):
            continue
        base = m.get(f"baseline_{k}")
        lines.append(f"| {k} | {_fmt(v)} | {_fmt(base) if base is not None else ''} |")
    lines += ["", "The baseline is the trivial model: it predicts the training base rate (binary), the class "
              "prior (multiclass) or the training mean (regression) for every row. No version is promoted "
              "unless it beats it (promote.baseline_margin).", ""]
    for name in plots:
        if name in ("roc.png", "calibration.png", "curves.png"):
            lines.append(f"![{name[:-4]}]({name})")
    if "confusion" in m:
        c, thr = m["confusion"], lineage.get("threshold") or {}
        how = (f" chosen on the {thr['split']} split for {thr['objective']}" if thr.get("objective") not in (None, "fixed")
               else " (fixed)")
        lines += ["", f"## Decisions at threshold {_fmt(m['threshold'])}{how}", "",
                  "| | predicted positive | predicted negative |", "|---|---|---|",
                  f"| actual positive | {c['tp']:,} | {c['fn']:,} |", f"| actual negative | {c['fp']:,} | {c['tn']:,} |",
                  "", f"Precision {_fmt(m['precision'])}, recall {_fmt(m['recall'])} at this threshold; the endpoint's "
                  "`label` and batch inference's decide at it."]
        if thr.get("note"):
            lines += ["", f"Note: {thr['note']}."]
        if "pr.png" in plots:
            lines += ["", "![pr](pr.png)"]
    if ev.explanations.get("mean_abs"):
        e = ev.explanations
        lines += ["", "## What drives the predictions", "",
                  f"Mean |contribution| per field over {e['rows']:,} test rows, on the model's margin ({e['units']}): "
                  "the same contributions `POST /predict?explain=true` and `rayline predict --explain` give per row.", "",
                  "| field | mean abs contribution |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in list(e["mean_abs"].items())[:20]]
        if "explanations.png" in plots:
            lines += ["", "![explanations](explanations.png)"]
        for col, per in (e.get("slices") or {}).items():
            if per:
                lines += ["", f"Top fields by {col}:", "", f"| {col} | top fields |", "|---|---|"]
                lines += [f"| {v} | {', '.join(f'{k} {_fmt(x)}' for k, x in top.items())} |" for v, top in per.items()]
    if history:
        val_keys = [k for k in history[0] if k.startswith("val_") and k != "val_loss"]
        lines += ["", "## Training", "", "| epoch | train loss | val loss | " + " | ".join(val_keys) + " | s |",
                  "|---" * (4 + len(val_keys)) + "|"]
        for h in history:
            extra = " | ".join(_fmt(h[k]) for k in h if k.startswith("val_") and k != "val_loss")
            lines.append(f"| {h['epoch']} | {_fmt(h['train_loss'])} | {_fmt(h['val_loss'])} | {extra} | {h['epoch_time_s']} |")
    for col, rows in ev.slices.items():
        lines += ["", f"## By {col}", "", f"| {col} | rows | {ev.metric} |", "|---|---|---|"]
        lines += [f"| {r['value']} | {r['rows']:,} | {_fmt(r[ev.metric])} |" for r in rows]
        if f"slice_{col}.png" in plots:
            lines += ["", f"![{col}](slice_{col}.png)"]
    if lineage:
        lines += ["", "## Lineage", "", "```json"]
        import json

        lines += [json.dumps(lineage, indent=2, default=str), "```"]
    return "\n".join(lines) + "\n"
