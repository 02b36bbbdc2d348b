"""`nibble quantize --kv-cache-scheme fp8` on the tiny random Llama of test_quantize.py:

- the export carries compressed-tensors' kv_cache_scheme and per-layer F32 [1]
  `self_attn.k_scale` / `v_scale` equal to amax / 448 of K (after RoPE) and V over the
  calibration tokens, recomputed here with transformers on nibble's dequantized weights;
- `nibble logits --kv-cache-dtype fp8_e4m3` loads exactly those scales (debug log) and its logits
  stay close to the f32-KV ones.
"""
import json
import re

import numpy as np
import pytest

from test_quantize import TINY_CONFIG, dequantized, quantize, run, tiny  # noqa: F401

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

FP8_E4M3_MAX = 448.0
ARGS = ["--scheme", "W8A16", "--method", "rtn", "--kv-cache-scheme", "fp8"]


def reference_amax(tiny, name):
    """amax of K after RoPE and of V per layer, by transformers on the dequantized weights."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(tiny / "model"), dtype=torch.float32)
    state = model.state_dict()
    state.update(dequantized(tiny, name))
    model.load_state_dict(state)
    n_layers, hd = TINY_CONFIG["num_hidden_layers"], 128 // TINY_CONFIG["num_attention_heads"]
    seen = {}

    def hook(layer, which):
        def f(_module, _inputs, out):
            seen.setdefault((layer, which), []).append(out.detach())
        return f

    for i, layer in enumerate(model.model.layers):
        layer.self_attn.k_proj.register_forward_hook(hook(i, "k"))
        layer.self_attn.v_proj.register_forward_hook(hook(i, "v"))
    ids = torch.tensor(json.loads((tiny / "calib.json").read_text()))
    with torch.no_grad():
        model(ids)
        pos = torch.arange(ids.shape[1])[None].expand(ids.shape[0], -1)
        cos, sin = model.model.rotary_emb(seen[(0, "k")][0], pos)
        amax = []
        for i in range(n_layers):
            k = seen[(i, "k")][0].view(*ids.shape, -1, hd).transpose(1, 2)
            k, _ = apply_rotary_pos_emb(k, k, cos, sin)
            amax.append((k.abs().max().item(), seen[(i, "v")][0].abs().max().item()))
    return amax


def test_fp8_kv_cache_scales_round_trip(nibble_bin, tiny):
    name = "ct_w8_kv_fp8"
    out, _ = quantize(nibble_bin, tiny, name, *ARGS)
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    kv = config["kv_cache_scheme"]
    assert {k: kv[k] for k in ("num_bits", "type", "strategy", "dynamic", "symmetric")} == {
        "num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False, "symmetric": True}

    tensors = safetensors_torch.load_file(str(out / "model.safetensors"))
    written = []
    for i in range(TINY_CONFIG["num_hidden_layers"]):
        ks, vs = (tensors[f"model.layers.{i}.self_attn.{x}_scale"] for x in "kv")
        assert ks.dtype == torch.float32 and tuple(ks.shape) == (1,)
        assert vs.dtype == torch.float32 and tuple(vs.shape) == (1,)
        written.append((ks.item(), vs.item()))

    # The pipeline's f32 forward and transformers' agree to float rounding.
    ref = reference_amax(tiny, name)
    np.testing.assert_allclose(np.array(written) * FP8_E4M3_MAX, np.array(ref), rtol=1e-4)

    logits = {}
    for dtype in ("auto", "fp8_e4m3"):
        r = run([nibble_bin, "--log-level", "debug", "logits", "-m", out, "--dtype", "float32",
                 "--kv-cache-dtype", dtype, "--prompts", tiny / "prompts.json",
                 "--out", tiny / f"{name}.{dtype}"])
        assert r.returncode == 0, r.stderr
        logits[dtype] = np.load(tiny / f"{name}.{dtype}" / "logits_0.npy")
        if dtype == "fp8_e4m3":
            loaded = [(float(k), float(v)) for k, v in re.findall(
                r"kv cache: layer \d+ k_scale (\S+) v_scale (\S+)", r.stdout + r.stderr)]
            np.testing.assert_allclose(loaded, written, rtol=1e-6)
    ours, base = logits["fp8_e4m3"], logits["auto"]
    assert not np.array_equal(ours, base)  # the fp8 cache is really used
    # e4m3 keeps 3 mantissa bits (relative rounding ≤ 2⁻⁴ per cached element); measured on this
    # model: max |Δlogit| ≈ 0.023 for logits of magnitude ≈ 1.7 (1.4 %).
    assert np.abs(ours - base).max() < 0.05 * np.abs(base).max()


def test_kv_cache_scheme_refusals(nibble_bin, tiny):
    out = tiny / "kv_refused"
    for args, needle in [
        (ARGS + ["--format", "gptq"], "--kv-cache-scheme"),
        (["--kv-cache-scheme", "int8"], "--kv-cache-scheme"),
    ]:
        r = run([nibble_bin, "quantize", "-q", "-m", tiny / "model", "--out", out, *args])
        assert r.returncode != 0 and needle in r.stderr, (args, r.stderr)
        assert not out.exists()
