import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from datasets_scripts.attributes import load_registry
from tests.conftest import NUM_ROIS, tiny_encoder_config
from processing.processing_fcnllm import normalize_fcn
from modeling_fcnllm import FCNEncoderForAttributePrediction
from fcn_llm.training.encoder_pretraining import encode_targets, head_specs, predict_attributes, pretrain_encoder


def _cohort(num_subjects: int, seed: int = 0):
    """FCNs whose block (ROIs 0-3 x 4-8) correlation rises with ADHD; age and sex carry no signal."""
    rng = np.random.default_rng(seed)
    adhd = rng.integers(0, 2, num_subjects)
    fcns = []
    for label in adhd:
        latent = rng.normal(size=(80, 2))
        series = rng.normal(size=(80, NUM_ROIS))
        series[:, :4] += latent[:, :1]
        series[:, 4:9] += latent[:, :1] * (1.2 if label else 0.0) + latent[:, 1:]
        fcns.append(np.corrcoef(series.T))
    meta = pd.DataFrame({
        "subject_id": [f"s{i}" for i in range(num_subjects)],
        "adhd": adhd.astype(float),
        "age": rng.uniform(8, 40, num_subjects),
        "sex": rng.choice(["Female", "Male", None], num_subjects),
    })
    return np.stack(fcns).astype(np.float32), meta


def test_targets_and_specs_skip_missing_and_constant_columns():
    registry = load_registry()
    meta = pd.DataFrame({"adhd": [1.0, 0.0, np.nan], "sex": ["Female", None, "Male"], "bmi": [20.0, 20.0, 20.0]})
    specs = head_specs(meta, registry.select(["adhd", "sex", "bmi", "age"]))
    assert [s.key for s in specs] == ["adhd", "sex"]
    targets, mask = encode_targets(meta, specs)
    assert mask.tolist() == [[True, True], [True, False], [False, True]]
    assert targets[2, 1] == 1  # "Male" is class 1


def test_pretraining_learns_a_planted_effect():
    registry = load_registry()
    fcns, meta = _cohort(240)
    train, test = slice(0, 160), slice(160, 240)
    model, history = pretrain_encoder(
        tiny_encoder_config(hidden_size=32), fcns[train], meta[train], registry.select(["adhd", "age", "sex"]),
        epochs=30, batch_size=32, lr=3e-3, seed=0,
    )
    assert history.samples_seen > 0 and history.best_epoch >= 0
    assert [h.key for h in model.config.attribute_heads] == ["adhd", "age", "sex"]
    predictions = predict_attributes(model, fcns[test])
    assert predictions["adhd"].shape == (80,)
    assert predictions["sex"].shape == (80, 2)
    assert roc_auc_score(meta["adhd"][test], predictions["adhd"]) > 0.8


def test_nothing_to_learn_is_an_error():
    registry = load_registry()
    fcns, meta = _cohort(10)
    meta["adhd"] = 1.0
    with pytest.raises(ValueError, match="nothing to pre-train on"):
        pretrain_encoder(tiny_encoder_config(), fcns, meta[["subject_id", "adhd"]], registry.select(["adhd"]))


def test_heads_become_the_fitted_stack_of_network_fcn_and_token_outputs(monkeypatch):
    """The closed-form stack is folded back into the heads exactly: their outputs are the fitted linear model
    of [standardised network-level FCN, standardised token outputs]; the network-level FCN alone carries the
    planted between-network block, so even an untrained encoder's heads separate the classes."""
    import fcn_llm.training.encoder_pretraining as pretraining

    fits = {}
    fit_linear = pretraining._fit_linear

    def recording_fit(z, y, spec, seed):
        weight, bias = fit_linear(z, y, spec, seed)
        fits[spec["key"]] = (z, weight, bias)
        return weight, bias

    monkeypatch.setattr(pretraining, "_fit_linear", recording_fit)
    registry = load_registry()
    fcns, meta = _cohort(240)
    train, test = slice(0, 160), slice(160, 240)
    model, history = pretrain_encoder(
        tiny_encoder_config(hidden_size=32), fcns[train], meta[train], registry.select(["adhd", "age", "sex"]),
        epochs=0, seed=0,
    )
    encoder, heads = model.encoder, model.attribute_heads
    assert history.samples_seen == 0 and set(fits) == {"adhd", "age", "sex"}
    assert heads.network_heads["adhd"].weight.abs().sum() > 0 and (heads.network_std > 0).all()
    assert roc_auc_score(meta["adhd"][test], predict_attributes(model, fcns[test])["adhd"]) > 0.8

    x = torch.from_numpy(normalize_fcn(fcns[train], "zscore"))
    with torch.no_grad():
        outputs = heads.eval()(encoder.eval()(x)).double()
    z, weight, bias = fits["adhd"]  # adhd is known for every subject: the stack saw all rows in order
    expected = torch.from_numpy(z @ weight.T.astype(np.float64) + bias)
    torch.testing.assert_close(outputs[:, :1], expected, atol=1e-4, rtol=1e-4)
    # a two-class categorical head: both class logits vary (opposite halves of the fitted logit), same softmax
    female, male = heads.split(outputs)["sex"].unbind(-1)
    torch.testing.assert_close(female, -male)
    assert male.std() > 0


def test_without_linear_network_heads_the_network_path_stays_zero():
    registry = load_registry()
    fcns, meta = _cohort(60)
    model, _ = pretrain_encoder(tiny_encoder_config(), fcns, meta, registry.select(["adhd"]), epochs=2, seed=0,
                                linear_network_heads=False)
    assert all((h.weight == 0).all() and (h.bias == 0).all() for h in model.attribute_heads.network_heads.values())


def test_the_trained_model_saves_and_loads_as_a_pretrained_folder(tmp_path):
    """Stage 0's model is an ordinary `save_pretrained` folder: `from_pretrained` gives the same predictions,
    with the head specs (classes, target scaling) in its config."""
    registry = load_registry()
    fcns, meta = _cohort(60)
    model, _ = pretrain_encoder(tiny_encoder_config(), fcns, meta, registry.select(["adhd", "age", "sex"]), epochs=1)
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors"}
    loaded = FCNEncoderForAttributePrediction.from_pretrained(tmp_path)
    assert loaded.config.attribute_heads == model.config.attribute_heads
    age = next(h for h in loaded.config.attribute_heads if h.key == "age")
    assert age.std > 1 and age.mean == pytest.approx(meta["age"].mean())
    for key, value in predict_attributes(model, fcns[:8]).items():
        np.testing.assert_allclose(predict_attributes(loaded, fcns[:8])[key], value, rtol=1e-5, atol=1e-6)


def test_a_nan_fcn_is_refused_by_the_processors_validation():
    registry = load_registry()
    fcns, meta = _cohort(12)
    fcns[3, 0, 1] = fcns[3, 1, 0] = np.nan
    with pytest.raises(ValueError, match="FCN 3 has 2 NaN or inf"):
        pretrain_encoder(tiny_encoder_config(), fcns, meta, registry.select(["adhd"]))
    model, _ = pretrain_encoder(tiny_encoder_config(), fcns[4:], meta[4:], registry.select(["adhd"]), epochs=1)
    with pytest.raises(ValueError, match="FCN 3 has 2 NaN or inf"):
        predict_attributes(model, fcns)
