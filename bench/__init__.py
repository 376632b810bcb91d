"""FCN-LLM's benchmark suite (`make bench` = `python -m bench.run`): every figure is a ratio of two
things measured side by side in the same run (medians of interleaved repeats), absolute times beside.

- `timing`: interleaved repeats and medians;
- `setup`: the bench's instruction set, backbones wrapped as FCN-LLM next to the bare LLM, batches;
- `overhead`: a training step of FCN-LLM vs the bare LLM on the same tokens (stages 1 and 2);
- `encoder`: encoder graphs/s, sparse PyG vs dense layers, cost exponent in N;
- `connectome`: time series -> FCNs vs nilearn's `ConnectivityMeasure` (same estimator);
- `answering`: zero-shot scoring vs the bare LLM's forward; scoring vs `generate()`;
- `tokens`: graph tokens per FCN, prompt lengths, step time vs G;
- `memory`: peak RSS of stage-1/2 (full, LoRA) steps in subprocesses, largest batch in 24 GiB;
- `pipeline`: collator + FCN lookup samples/s vs training-step samples/s;
- `report`: results.json and the markdown table; `run`: the entry point.

`encoder_cost.py` (every dense layer kind, one layer vs GATv2Conv) and `learning_curve.py` (stage-1
AUC vs instructions seen) are separate scripts.
"""
