"""ModelOpt quantize-and-serve (`--quantization modelopt_fp8|modelopt_fp4` on an unquantized model)
on a tiny random-weight Llama that carries the default model's tokenizer, so that the default
calibration (BoolQ passages, 32 x 512 tokens) applies:

- the model served equals `nibble quantize` with the equivalent recipe (--scheme FP8|NVFP4
  --format modelopt --nsamples 32 --seqlen 512), loaded back from its export, logit for logit;
- --modelopt-export-path writes a ModelOpt checkpoint that loads back to the same logits;
- --modelopt-checkpoint-save-path then --modelopt-checkpoint-restore-path gives identical logits
  without a calibration forward; a restore directory of another method or model is refused;
- `nibble serve` does the same through the Engine.
"""
import json
import os
import subprocess

import numpy as np
import pytest

from server_util import ServerProcess

TINY_CONFIG = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 512,
    "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
    "bos_token_id": 1, "eos_token_id": 2,
}
SCHEMES = {"modelopt_fp8": "FP8", "modelopt_fp4": "NVFP4"}


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


def synth(nibble_bin, root, name, vocab, seed):
    (root / f"{name}.json").write_text(json.dumps(dict(TINY_CONFIG, vocab_size=vocab)))
    out = root / name
    r = run([nibble_bin, "synth", "--config", root / f"{name}.json", "--out", out, "--dtype",
             "bfloat16", "--seed", seed, "--force"])
    assert r.returncode == 0, r.stderr
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (out / f).write_bytes((root / "default_hf" / f).read_bytes())
    return out


@pytest.fixture(scope="module")
def tiny(nibble_bin, default_gguf, shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("quantize_and_serve")
    hf = root / "default_hf"
    r = run([nibble_bin, "convert", default_gguf, "--out", hf, "--dtype", "bfloat16", "--force"])
    assert r.returncode == 0, r.stderr
    vocab = json.loads((hf / "config.json").read_text())["vocab_size"]
    synth(nibble_bin, root, "model", vocab, 7)
    synth(nibble_bin, root, "other", vocab, 8)
    rng = np.random.default_rng()
    (root / "prompts.json").write_text(json.dumps([rng.integers(0, vocab, size=24).tolist()]))
    return root


def env(shared_data):
    return dict(os.environ, NIBBLE_SHARED_DATA=str(shared_data))


def logits(nibble_bin, tiny, shared_data, model, name, *args, check=True):
    out = tiny / f"{name}.logits"
    r = run([nibble_bin, "logits", "-m", model, "--dtype", "float32", "--prompts",
             tiny / "prompts.json", "--out", out, *args], env=env(shared_data))
    if check:
        assert r.returncode == 0, r.stderr
        return np.load(out / "logits_0.npy"), r
    return None, r


@pytest.fixture(scope="module")
def offline(nibble_bin, tiny, shared_data):
    """`nibble quantize` with the recipe quantize-and-serve uses, per method."""
    results = {}
    for method, scheme in SCHEMES.items():
        out = tiny / f"offline_{method}"
        r = run([nibble_bin, "quantize", "-q", "-m", tiny / "model", "--scheme", scheme,
                 "--format", "modelopt", "--nsamples", "32", "--seqlen", "512", "--out", out,
                 "--force"], env=env(shared_data))
        assert r.returncode == 0, r.stderr
        results[method], _ = logits(nibble_bin, tiny, shared_data, out, f"offline_{method}")
    return results


@pytest.mark.parametrize("method", sorted(SCHEMES))
def test_quantize_and_serve_equals_offline_quantize_and_export(nibble_bin, tiny, shared_data,
                                                               offline, method):
    export = tiny / f"export_{method}"
    served, r = logits(nibble_bin, tiny, shared_data, tiny / "model", f"served_{method}",
                       "--quantization", method, "--modelopt-export-path", export)
    assert "calibrating on 32 x 512 tokens" in r.stderr, r.stderr
    assert np.isfinite(served).all()
    np.testing.assert_array_equal(served, offline[method])
    # The export is a ModelOpt checkpoint that loads back to the very same model.
    side = json.loads((export / "hf_quant_config.json").read_text())
    assert side["producer"]["name"] == "modelopt"
    assert side["quantization"]["quant_algo"] == SCHEMES[method]
    config = json.loads((export / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "modelopt"
    loaded, _ = logits(nibble_bin, tiny, shared_data, export, f"export_{method}")
    np.testing.assert_array_equal(loaded, served)
    # SGLang's deploy step for such an export: --quantization modelopt.
    again, _ = logits(nibble_bin, tiny, shared_data, export, f"export_mo_{method}",
                      "--quantization", "modelopt")
    np.testing.assert_array_equal(again, served)
    assert not list(tiny.glob(f"export_{method}.partial*"))


def test_modelopt_fp8_export_layout(nibble_bin, tiny, shared_data, offline):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    export = tiny / "offline_modelopt_fp8"
    tensors = safetensors_torch.load_file(str(export / "model.safetensors"))
    p = "model.layers.0.self_attn.q_proj"
    assert str(tensors[p + ".weight"].dtype) == "torch.float8_e4m3fn"
    assert tensors[p + ".weight_scale"].shape == () and tensors[p + ".input_scale"].shape == ()
    assert tensors[p + ".input_scale"].item() > 0
    side = json.loads((export / "hf_quant_config.json").read_text())["quantization"]
    assert side["quant_algo"] == "FP8" and "group_size" not in side
    assert "kv_cache_quant_algo" in side and "exclude_modules" in side


def test_save_then_restore_skips_calibration(nibble_bin, tiny, shared_data):
    saved_dir = tiny / "calibration_fp8"
    first, r = logits(nibble_bin, tiny, shared_data, tiny / "model", "saved", "--quantization",
                      "modelopt_fp8", "--modelopt-checkpoint-save-path", saved_dir)
    assert "calibration saved to" in r.stderr, r.stderr
    assert (saved_dir / "modelopt_calibration.json").exists()
    assert (saved_dir / "layer_0.safetensors").exists()
    restored, r = logits(nibble_bin, tiny, shared_data, tiny / "model", "restored",
                         "--quantization", "modelopt_fp8", "--modelopt-checkpoint-restore-path",
                         saved_dir)
    assert "calibration restored from" in r.stderr and "calibrating" not in r.stderr, r.stderr
    np.testing.assert_array_equal(restored, first)


def test_bad_restore_paths_are_refused(nibble_bin, tiny, shared_data):
    saved_dir = tiny / "calibration_fp8"
    if not saved_dir.exists():
        test_save_then_restore_skips_calibration(nibble_bin, tiny, shared_data)
    cases = [
        (tiny / "model", "modelopt_fp8", tiny / "no_such_dir", "no such directory"),
        (tiny / "model", "modelopt_fp8", tiny / "model", "no modelopt_calibration.json"),
        (tiny / "model", "modelopt_fp4", saved_dir, "calibrated for modelopt_fp8, not modelopt_fp4"),
        (tiny / "other", "modelopt_fp8", saved_dir, "calibrated on other weights"),
    ]
    for model, method, path, needle in cases:
        _, r = logits(nibble_bin, tiny, shared_data, model, "bad", "--quantization", method,
                      "--modelopt-checkpoint-restore-path", path, check=False)
        assert r.returncode == 1, r.stderr
        assert needle in r.stderr and str(path) in r.stderr, r.stderr


def test_refusals(nibble_bin, tiny, shared_data, offline):
    cases = [
        # SGLang's rule on a checkpoint quantized otherwise: the methods must agree.
        (tiny / "offline_modelopt_fp4", ["--quantization", "modelopt_fp8"], "does not match"),
        (tiny / "model", ["--quantization", "modelopt"], "name the scheme"),
        (tiny / "model", ["--modelopt-export-path", tiny / "x"], "needs --quantization modelopt"),
        (tiny / "model", ["--quantization", "fp8", "--modelopt-checkpoint-save-path", tiny / "x"],
         "needs --quantization modelopt"),
        (tiny / "model", ["--quantization", "modelopt_fp8", "--modelopt-export-path", tiny / "model"],
         "that is the model being quantized"),
    ]
    for model, args, needle in cases:
        _, r = logits(nibble_bin, tiny, shared_data, model, "refused", *args, check=False)
        assert r.returncode == 1 and needle in r.stderr, (args, r.stderr)
    assert not (tiny / "x").exists()


def test_sglang_spellings(nibble_bin, tiny, shared_data):
    """--modelopt-quant fp8 and --quantize-and-serve mean --quantization modelopt_fp8."""
    saved_dir = tiny / "calibration_fp8"
    if not saved_dir.exists():
        test_save_then_restore_skips_calibration(nibble_bin, tiny, shared_data)
    a, _ = logits(nibble_bin, tiny, shared_data, tiny / "model", "restored_a", "--quantization",
                  "modelopt_fp8", "--modelopt-checkpoint-restore-path", saved_dir)
    b, _ = logits(nibble_bin, tiny, shared_data, tiny / "model", "spelled", "--modelopt-quant",
                  "fp8", "--quantize-and-serve", "--modelopt-checkpoint-restore-path", saved_dir)
    np.testing.assert_array_equal(a, b)
    _, r = logits(nibble_bin, tiny, shared_data, tiny / "model", "refused", "--quantize-and-serve",
                  check=False)
    assert r.returncode == 1 and "requires ModelOpt quantization" in r.stderr, r.stderr


def generate(server, prompt):
    status, body = server.json("POST", "/generate", {
        "input_ids": prompt, "sampling_params": {"temperature": 0, "max_new_tokens": 8}})
    assert status == 200, body
    return body["output_ids"]


def test_serve_with_restored_calibration_equals_serving_the_export(nibble_bin, tiny, shared_data,
                                                                  offline):
    saved_dir = tiny / "calibration_fp8"
    if not saved_dir.exists():
        test_save_then_restore_skips_calibration(nibble_bin, tiny, shared_data)
    prompt = json.loads((tiny / "prompts.json").read_text())[0]
    outputs = []
    for model, args in ((tiny / "model", ["--quantization", "modelopt_fp8",
                                          "--modelopt-checkpoint-restore-path", saved_dir]),
                        (tiny / "offline_modelopt_fp8", [])):
        server = ServerProcess(nibble_bin, model, "--max-total-tokens", "1024", *args)
        try:
            server.wait_healthy()
            outputs.append(generate(server, prompt))
        finally:
            server.terminate()
        if args:
            assert "calibration restored from" in server.log_text()
    assert len(outputs[0]) == 8 and outputs[0] == outputs[1]
