"""nibble's SmolLM2-135M-Instruct against transformers (torch, CPU, float32).

The reference loads the same GGUF through transformers' own GGUF reader (its own
dequantization and q/k un-permutation), so this checks nibble's GGUF loading, the converted
HF directory and the forward pass at once. Relative error is normwise per prompt:
max|nibble - torch| / max|torch| over all positions and the whole vocabulary.
"""
import json
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

N_PROMPTS = 8
PROMPT_TOKENS = 48
GREEDY_TOKENS = 64


@pytest.fixture(scope="module")
def reference(default_gguf):
    tok = transformers.AutoTokenizer.from_pretrained(default_gguf.parent, gguf_file=default_gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        default_gguf.parent, gguf_file=default_gguf.name, dtype=torch.float32)
    model.eval()
    return tok, model


@pytest.fixture(scope="module")
def prompts(reference, shared_data):
    tok, _ = reference
    lines = (shared_data / "text" / "wikitext-2-raw-test.txt").read_text(encoding="utf-8").splitlines()
    # Real paragraphs, not headings: long lines spread over the file.
    paragraphs = [l.strip() for l in lines if len(l) > 400]
    picked = paragraphs[:: max(1, len(paragraphs) // N_PROMPTS)][:N_PROMPTS]
    return [tok(p, add_special_tokens=False).input_ids[:PROMPT_TOKENS] for p in picked]


@pytest.fixture(scope="module")
def torch_outputs(reference, prompts):
    _, model = reference
    logits, greedy = [], []
    with torch.no_grad():
        for ids in prompts:
            x = torch.tensor([ids])
            logits.append(model(x).logits[0].numpy())
            out = model.generate(x, max_new_tokens=GREEDY_TOKENS, min_new_tokens=GREEDY_TOKENS,
                                 do_sample=False, pad_token_id=0)
            greedy.append(out[0, len(ids):].numpy())
    return logits, greedy


def run_nibble(nibble_bin, model_path, prompts, tmp_path, greedy=0):
    prompts_file = tmp_path / "prompts.json"
    prompts_file.write_text(json.dumps(prompts))
    out = tmp_path / f"out_{abs(hash(str(model_path)))}"
    cmd = [str(nibble_bin), "logits", "--model-path", str(model_path), "--dtype", "float32",
           "--prompts", str(prompts_file), "--out", str(out)]
    if greedy:
        cmd += ["--greedy", str(greedy)]
    subprocess.run(cmd, check=True)
    logits = [np.load(out / f"logits_{i}.npy") for i in range(len(prompts))]
    tokens = [np.load(out / f"greedy_{i}.npy") for i in range(len(prompts))] if greedy else None
    return logits, tokens


def normwise_relative_error(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_gguf_logits_and_greedy_match_transformers(nibble_bin, default_gguf, prompts, torch_outputs, tmp_path):
    ref_logits, ref_greedy = torch_outputs
    logits, greedy = run_nibble(nibble_bin, default_gguf, prompts, tmp_path, greedy=GREEDY_TOKENS)
    for i, (ours, theirs) in enumerate(zip(logits, ref_logits)):
        assert ours.shape == theirs.shape
        err = normwise_relative_error(ours, theirs)
        assert err <= 1e-4, f"prompt {i}: relative error {err:.2e}"
    for i, (ours, theirs) in enumerate(zip(greedy, ref_greedy)):
        assert ours.tolist() == theirs.tolist(), f"prompt {i}: greedy continuation differs"


def test_converted_directory_matches_gguf(nibble_bin, default_gguf, prompts, torch_outputs, tmp_path):
    hf_dir = tmp_path / "smollm2-f32"
    subprocess.run([str(nibble_bin), "convert", str(default_gguf), "--out", str(hf_dir),
                    "--dtype", "float32"], check=True)
    for name in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]:
        assert (hf_dir / name).exists(), name
    from_dir, _ = run_nibble(nibble_bin, hf_dir, prompts, tmp_path)
    from_gguf, _ = run_nibble(nibble_bin, default_gguf, prompts, tmp_path)
    # The GGUF runs on its quantized blocks (the a16 kernel sums each group before scaling),
    # the directory on dequantized f32 weights: the same values summed in another order.
    for a, b in zip(from_dir, from_gguf):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * float(np.max(np.abs(b))))
    # transformers loads the converted directory and agrees with itself on the GGUF.
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    ref_logits, _ = torch_outputs
    with torch.no_grad():
        for ids, ref in zip(prompts, ref_logits):
            ours = model(torch.tensor([ids])).logits[0].numpy()
            assert normwise_relative_error(ours, ref) <= 1e-5
