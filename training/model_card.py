"""Fill the repository's `model_card.md` template with a trained model's facts and its real results."""

from __future__ import annotations

from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent / "model_card.md"

DEFAULT_LIMITATIONS = (
    "Trained on simulated cohorts built on real HCP connectivity templates (see the dataset card): the "
    "numbers say how well the recipe recovers planted, literature-shaped effects, not clinical validity. "
    "Not a diagnostic device. Judgment answers follow the model's own attribute predictions (a linear stack of "
    "the network-level FCN and the encoder's outputs, fitted on the training cohorts), handed to the LLM by the "
    "evidence token, so they track a supervised model trained on the same cohorts rather than add to it. "
    "The evidence token reads the question as a bag of word embeddings fitted to the training wording: asked in "
    "wording it was not trained on (the dataset's held-out frames and terms), judgments fall to about chance, "
    "and a threshold it was not trained on is read only approximately. Questions that ask for a number "
    "(\"How old is this subject?\", answered by generation) or compare two subjects are answered poorly: on "
    "the demo, generated numbers were further off than the median and comparisons near chance."
)


def write_model_card(
    out_dir: str | Path,
    config,
    *,
    base_model: str,
    atlas: str,
    training_summary: str,
    results_table: str,
    repo_id: str = "org/fcn-llm",
    limitations: str = DEFAULT_LIMITATIONS,
) -> Path:
    """Write `README.md` (the Hub model card) into `out_dir` and return its path."""
    text = TEMPLATE.read_text().format(
        model_name=Path(out_dir).name,
        base_model=base_model,
        gnn_type=config.encoder_config.gnn_type,
        atlas=atlas,
        num_rois=config.encoder_config.num_rois,
        graph_seq_length=config.graph_seq_length,
        repo_id=repo_id,
        training_summary=training_summary,
        results_table=results_table,
        limitations=limitations,
    )
    path = Path(out_dir) / "README.md"
    path.write_text(text)
    return path
