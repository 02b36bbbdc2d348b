"""`nibble quantize --kv-cache-scheme fp8` on the tiny random Llama of test_quantize.py:

- the export carries compressed-tensors' kv_cache_scheme and per-layer F32 [1]
  `self_attn.k_scale` / `v_scale` equal to amax / 448 of K (after RoPE) and V over the
  calibration tokens, recomputed here with transformers on nibble's dequantized weights;
- `nibble logits --kv-cache-dtype fp8_e4m3` loads exactly those scales (debug log) and its logits
  stay close to the f32-KV ones;
- the fp8 export (`quant_method: fp8`) carries the same-named `self_attn.k_scale` / `v_scale`,
  the ModelOpt export `kv_cache_quant_algo: FP8` with `k_proj.k_scale` / `v_proj.v_scale`
  (clamped to ≥ 1 as ModelOpt writes them), and nibble loads each back with those values;
- a YAML (LLM Compressor `kv_cache_scheme:`) or JSON recipe does what the flag does; formats whose
  consumers read no KV scales (gptq, awq, gguf) refuse the scheme.
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


def loaded_kv_scales(nibble_bin, tiny, model_dir, name):
    """The per-layer (k_scale, v_scale) nibble loads for an fp8 KV cache (debug log)."""
    r = run([nibble_bin, "--log-level", "debug", "logits", "-m", model_dir, "--dtype", "float32",
             "--kv-cache-dtype", "fp8_e4m3", "--prompts", tiny / "prompts.json",
             "--out", tiny / f"{name}.kvlogits"])
    assert r.returncode == 0, r.stderr
    return [(float(k), float(v)) for k, v in re.findall(
        r"kv cache: layer \d+ k_scale (\S+) v_scale (\S+)", r.stdout + r.stderr)]


@pytest.mark.parametrize("fmt,scheme",
                         [("fp8", "FP8"), ("modelopt", "NVFP4"), ("modelopt", "FP8")])
def test_fp8_and_modelopt_exports_carry_kv_scales(nibble_bin, tiny, fmt, scheme):
    name = f"{fmt}_{scheme}_kv_fp8"
    out, _ = quantize(nibble_bin, tiny, name, "--scheme", scheme, "--method", "rtn",
                      "--format", fmt, "--kv-cache-scheme", "fp8")
    tensors = safetensors_torch.load_file(str(out / "model.safetensors"))
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    amax = np.array(reference_amax(tiny, name))
    expected = amax / FP8_E4M3_MAX
    if fmt == "fp8":
        names, shape = ("self_attn.k_scale", "self_attn.v_scale"), (1,)  # as its input_scale
    else:
        # ModelOpt names the scales after the projections and clamps them to ≥ 1
        # (postprocess_state_dict); the nested and the flat configs both say FP8.
        names, shape = ("self_attn.k_proj.k_scale", "self_attn.v_proj.v_scale"), ()
        expected = np.maximum(expected, 1.0)
        side = json.loads((out / "hf_quant_config.json").read_text())["quantization"]
        assert side["kv_cache_quant_algo"] == "FP8"
        assert config["kv_cache_scheme"] == {"dynamic": False, "num_bits": 8, "type": "float"}
    written = []
    for i in range(TINY_CONFIG["num_hidden_layers"]):
        ks, vs = (tensors[f"model.layers.{i}.{n}"] for n in names)
        for t in (ks, vs):
            assert t.dtype == torch.float32 and tuple(t.shape) == shape
        written.append((ks.item(), vs.item()))
    np.testing.assert_allclose(np.array(written), expected, rtol=1e-4)
    np.testing.assert_allclose(loaded_kv_scales(nibble_bin, tiny, out, name), written, rtol=1e-6)


YAML_KV = """quant_stage:
  quant_modifiers:
    QuantizationModifier:
      targets: ["Linear"]
      scheme: W8A16
      ignore: ["lm_head"]
      kv_cache_scheme:
        num_bits: 8
        type: float
        strategy: {strategy}
        dynamic: false
        symmetric: true
"""


def test_recipes_carry_the_kv_cache_scheme(nibble_bin, tiny):
    flag, _ = quantize(nibble_bin, tiny, "ct_w8_kv_flag", *ARGS)
    expected = safetensors_torch.load_file(str(flag / "model.safetensors"))
    (tiny / "kv.yaml").write_text(YAML_KV.format(strategy="tensor"))
    (tiny / "kv.json").write_text(json.dumps(
        {"scheme": "W8A16", "method": "rtn", "kv_cache_scheme": "fp8"}))
    for recipe in ("kv.yaml", "kv.json"):
        out, _ = quantize(nibble_bin, tiny, f"ct_w8_kv_{recipe}", "--recipe", tiny / recipe)
        config = json.loads((out / "config.json").read_text())["quantization_config"]
        assert config["kv_cache_scheme"]["num_bits"] == 8, recipe
        got = safetensors_torch.load_file(str(out / "model.safetensors"))
        assert got.keys() == expected.keys(), recipe
        for key in expected:
            assert torch.equal(got[key], expected[key]), (recipe, key)
    # Per-head scales (LLM Compressor's attn_head strategy) are not calibrated by nibble.
    (tiny / "kv_head.yaml").write_text(YAML_KV.format(strategy="attn_head"))
    r = run([nibble_bin, "quantize", "-q", "-m", tiny / "model", "--recipe", tiny / "kv_head.yaml",
             "--out", tiny / "kv_head", "--force"])
    assert r.returncode != 0 and "kv_cache_scheme.strategy 'attn_head'" in r.stderr, r.stderr
    assert not (tiny / "kv_head").exists()


def test_kv_cache_scheme_refusals(nibble_bin, tiny):
    out = tiny / "kv_refused"
    for args, needle in [
        (ARGS + ["--format", "gptq"], "--format gptq has no KV-cache scales"),
        (["--scheme", "W4A16", "--method", "rtn", "--format", "awq", "--kv-cache-scheme", "fp8"],
         "--format awq has no KV-cache scales"),
        (["--scheme", "Q4_0", "--kv-cache-scheme", "fp8"], "--format gguf has no KV-cache scales"),
        (["--kv-cache-scheme", "int8"], "--kv-cache-scheme"),
    ]:
        r = run([nibble_bin, "quantize", "-q", "-m", tiny / "model", "--out", out, *args])
        assert r.returncode != 0 and needle in r.stderr, (args, r.stderr)
        assert not out.exists()
