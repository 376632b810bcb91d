"""PNG plots: ROC curves per binary attribute (all methods), predicted vs true per continuous attribute."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

from fcn_llm.questions import Question  # noqa: E402
from .report import METHODS, collect, group_questions  # noqa: E402


def plot_roc(questions: list[Question], answers: dict[str, dict[str, dict]], title: str, path: Path) -> Path | None:
    """ROC curves of every method on one row's binary questions; None if a class is absent."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    drawn = 0
    for method in METHODS:
        if method not in answers:
            continue
        refs, scores, _, _ = collect(questions, answers[method])
        if len(refs) == 0 or len(np.unique(refs)) < 2:
            continue
        fpr, tpr, _ = roc_curve(refs, scores)
        ax.plot(fpr, tpr, label=f"{method} (AUC {roc_auc_score(refs, scores):.2f})")
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_scatter(questions: list[Question], answers: dict[str, dict[str, dict]], title: str, units: str,
                 path: Path) -> Path | None:
    """Predicted vs true value per method (one panel each) on one continuous row; None if nothing to draw."""
    methods = [m for m in METHODS if m in answers and len(collect(questions, answers[m])[0])]
    if not methods:
        return None
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.4), squeeze=False)
    for ax, method in zip(axes[0], methods):
        refs, _, preds, missing = collect(questions, answers[method])
        ax.scatter(refs, preds, s=6, alpha=0.5)
        lo, hi = float(min(refs.min(), preds.min())), float(max(refs.max(), preds.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", linestyle=":", linewidth=1)
        r = np.corrcoef(refs, preds)[0, 1] if len(refs) > 1 and np.ptp(refs) and np.ptp(preds) else float("nan")
        extra = f", {missing} unparsed" if missing else ""
        ax.set(title=f"{method}\nr={r:.2f}, MAE={np.mean(np.abs(refs - preds)):.1f}{extra}",
               xlabel=f"true ({units})" if units else "true", ylabel="predicted")
        ax.title.set_fontsize(8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(questions: list[Question], answers: dict[str, dict[str, dict]], registry, out_dir: Path) -> list[Path]:
    """ROC per binary attribute and paradigm (predictive, judgment); scatter per continuous predictive row."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for (key, paradigm, held_out), group in group_questions(questions).items():
        if held_out:  # the plots show the training wording; results.md has both
            continue
        attribute = registry[key]
        if attribute.kind == "binary" and paradigm in ("predictive", "judgment"):
            path = plot_roc(group, answers, f"{attribute.name} ({paradigm})", out_dir / f"roc_{key}_{paradigm}.png")
        elif attribute.kind == "continuous" and paradigm == "predictive":
            path = plot_scatter(group, answers, f"{attribute.name}: predicted vs true", attribute.units,
                                out_dir / f"scatter_{key}.png")
        else:
            path = None
        if path is not None:
            written.append(path)
    return written
