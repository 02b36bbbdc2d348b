"""Random-weight Llama checkpoint + transformers reference outputs, on the GPU.

    python3 make_reference.py --preset llama3-8b --out DIR [--seed 0] [--prompt-tokens 1,2,3,4,5]
        [--steps 32]

Builds LlamaForCausalLM from a preset config with transformers' own random initialisation (seed
fixed), in bf16 directly on the GPU, saves it with save_pretrained (safetensors), then writes
DIR/reference.npz: the prompt positions' logits in bf16 (as transformers computes them, then
f32) and again with the model upcast to f32 (the ground truth for both engines), and greedy
generation of --steps tokens with their logits and the top-2 gap per step (ties explain
diverging tokens).
"""

import argparse
import json
import time

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

# Llama-3-8B's shapes and RoPE scaling.
LLAMA3_8B = dict(
    hidden_size=4096,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    intermediate_size=14336,
    vocab_size=128256,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    rope_scaling=dict(
        rope_type="llama3",
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=8192,
    ),
    max_position_embeddings=131072,
    tie_word_embeddings=False,
)

PRESETS = {
    "llama3-8b": LLAMA3_8B,
    # Quick checks: the same code paths at a fraction of the size (GQA group 4, head_dim 128).
    "small": dict(LLAMA3_8B, hidden_size=1024, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=2, intermediate_size=2816, vocab_size=32000),
    # Small enough to ship to a GPU machine with nibble's CPU logits beside it (about 20 MB):
    # the GPU schemes against nibble's CPU path (bench/gpu/decode/cpu_reference.sh).
    "tiny": dict(LLAMA3_8B, hidden_size=512, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=1, intermediate_size=1408, vocab_size=4096),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt-tokens", default="1,2,3,4,5")
    ap.add_argument("--steps", type=int, default=32)
    args = ap.parse_args()
    prompt = [int(t) for t in args.prompt_tokens.split(",")]
    # The GPU where there is one (the 8B model is built there); the tiny preset also on a CPU.
    device = "cuda" if torch.cuda.is_available() else "cpu"

    t0 = time.time()
    torch.manual_seed(args.seed)
    config = LlamaConfig(**PRESETS[args.preset])
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model = model.to(torch.bfloat16).eval()
    t1 = time.time()
    model.save_pretrained(args.out, safe_serialization=True)
    t2 = time.time()

    ids = torch.tensor([prompt], device=device)
    with torch.no_grad():
        prompt_bf16 = model(ids).logits[0].float().cpu().numpy()
        gen = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=args.steps,
            min_new_tokens=args.steps,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
            eos_token_id=None,
        )
        tokens = gen.sequences[0, len(prompt) :].cpu().numpy()
        step_logits = torch.stack([l[0].float() for l in gen.logits]).cpu().numpy()
        top2 = np.sort(step_logits, axis=1)[:, -2:]
        gaps = top2[:, 1] - top2[:, 0]
        model = model.float()
        prompt_f32 = model(ids).logits[0].float().cpu().numpy()
    np.savez(
        f"{args.out}/reference.npz",
        prompt=np.array(prompt),
        prompt_logits_bf16=prompt_bf16,
        prompt_logits_f32=prompt_f32,
        tokens=tokens,
        step_logits=step_logits,
        top2_gap=gaps,
    )
    print(
        json.dumps(
            dict(
                preset=args.preset,
                init_s=round(t1 - t0, 1),
                save_s=round(t2 - t1, 1),
                reference_s=round(time.time() - t2, 1),
                tokens=tokens.tolist(),
                min_top2_gap=float(gaps.min()),
            )
        )
    )


if __name__ == "__main__":
    main()
