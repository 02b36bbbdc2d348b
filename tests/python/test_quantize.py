"""`nibble quantize` end to end on a tiny random-weight Llama (`nibble synth`, 2 layers):

- every export, loaded back by nibble, gives the same logits as the in-memory quantized model
  (bit for bit: the loaders produce the very QuantizedTensors the pipeline made);
- compressed-tensors exports decompress (compressed-tensors through transformers, CPU) to exactly
  the weights nibble quantized, and transformers' logits match nibble's within bf16 error for
  weight-only schemes;
- GPTQ / AWQ / fp8 exports unpacked here with numpy following checkpoint-formats.md give the same
  weights; the export rules hold (sym qzeros words, g_idx = k // G, no zero point 0 in v1);
- saved calibration statistics reproduce the same quantization; bad input is refused and never
  leaves a half-written output.
"""
import json
import pathlib
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

TINY_CONFIG = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 512,
    "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
    "bos_token_id": 1, "eos_token_id": 2,
}


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def tiny(nibble_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("quantize")
    (root / "tiny.json").write_text(json.dumps(TINY_CONFIG))
    r = run([nibble_bin, "synth", "--config", root / "tiny.json", "--out", root / "model",
             "--dtype", "bfloat16", "--seed", "7"])
    assert r.returncode == 0, r.stderr
    rng = np.random.default_rng()
    calib = rng.integers(0, 512, size=(16, 64)).tolist()
    (root / "calib.json").write_text(json.dumps(calib))
    prompts = [rng.integers(0, 512, size=24).tolist()]
    (root / "prompts.json").write_text(json.dumps(prompts))
    return root


def quantize(nibble_bin, tiny, name, *args, check=True):
    out = tiny / name
    r = run([nibble_bin, "quantize", "-q", "-m", tiny / "model", "--calib", tiny / "calib.json",
             "--nsamples", "16", "--seqlen", "64", "--out", out, "--force",
             "--logits-prompts", tiny / "prompts.json", "--logits-out", tiny / f"{name}.mem",
             "--save-dequantized", tiny / f"{name}.deq.safetensors", *args])
    if check:
        assert r.returncode == 0, r.stderr
    return out, r


def nibble_logits(nibble_bin, tiny, model_dir, name):
    out = tiny / f"{name}.file"
    r = run([nibble_bin, "logits", "-m", model_dir, "--dtype", "float32", "--prompts",
             tiny / "prompts.json", "--out", out])
    assert r.returncode == 0, r.stderr
    return np.load(out / "logits_0.npy")


def dequantized(tiny, name):
    return safetensors_torch.load_file(str(tiny / f"{name}.deq.safetensors"))


ROUND_TRIP = {
    "ct_w4_g32_actorder": ["--scheme", "W4A16", "--group-size", "32", "--act-order"],
    "ct_w4_asym_g64": ["--scheme", "W4A16", "--asym", "--group-size", "64"],
    "ct_w8_channel": ["--scheme", "W8A16"],
    "ct_w8a8_smoothquant_gptq": ["--scheme", "W8A8", "--method", "smoothquant+gptq"],
    "ct_fp8_dynamic": ["--scheme", "FP8_DYNAMIC"],
    "ct_fp8_static": ["--scheme", "FP8"],
    "ct_fp8_block": ["--scheme", "FP8_BLOCK"],
    "gptq_w4_actorder": ["--scheme", "W4A16", "--format", "gptq", "--act-order", "--group-size",
                         "32"],
    "gptq_w4_asym": ["--scheme", "W4A16", "--format", "gptq", "--asym"],
    "gptq_w3_g32": ["--scheme", "W3A16", "--format", "gptq", "--group-size", "32"],
    "gptq_w8_rtn": ["--scheme", "W8A16", "--format", "gptq", "--method", "rtn"],
    "awq_w4": ["--scheme", "W4A16", "--format", "awq", "--method", "awq", "--asym",
               "--group-size", "32"],
    "fp8_static": ["--scheme", "FP8", "--format", "fp8"],
    "fp8_block": ["--scheme", "FP8_BLOCK", "--format", "fp8"],
    "modelopt_nvfp4": ["--scheme", "NVFP4"],
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIP))
def test_export_round_trip_logits(nibble_bin, tiny, name):
    out, _ = quantize(nibble_bin, tiny, name, *ROUND_TRIP[name])
    mem = np.load(tiny / f"{name}.mem" / "logits_0.npy")
    loaded = nibble_logits(nibble_bin, tiny, out, name)
    assert np.isfinite(mem).all()
    # The loaders rebuild exactly the pipeline's QuantizedTensors and activation schemes.
    np.testing.assert_array_equal(loaded, mem)


CT_CASES = {
    "ct_w4_g32_actorder": True, "ct_w4_asym_g64": True, "ct_w8_channel": True,
    "ct_w8a8_smoothquant_gptq": False, "ct_fp8_dynamic": False, "ct_fp8_static": False,
    "ct_fp8_block": False,
}


@pytest.mark.parametrize("name", sorted(CT_CASES))
def test_compressed_tensors_decompress_and_transformers(nibble_bin, tiny, name):
    pytest.importorskip("compressed_tensors")
    transformers = pytest.importorskip("transformers")
    from transformers.utils.quantization_config import CompressedTensorsConfig

    out = tiny / name
    if not (tiny / f"{name}.deq.safetensors").exists():
        out, _ = quantize(nibble_bin, tiny, name, *ROUND_TRIP[name])
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors"
    try:
        qc = CompressedTensorsConfig(dequantize=True)
    except TypeError:
        qc = CompressedTensorsConfig(run_compressed=False)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(out), quantization_config=qc, dtype=torch.bfloat16)
    state = model.state_dict()
    deq = dequantized(tiny, name)
    assert len(deq) == 14
    for key, ref in deq.items():
        # The library decompresses into the model dtype (bf16); nibble's f32 value q·s (exact in
        # f32) rounded once to bf16 must be the very same number.
        assert torch.equal(state[key], ref.to(state[key].dtype)), key
    if CT_CASES[name]:
        ids = torch.tensor(json.loads((tiny / "prompts.json").read_text())[0])[None]
        with torch.no_grad():
            theirs = model.float()(ids).logits[0].numpy()
        ours = np.load(tiny / f"{name}.mem" / "logits_0.npy")
        # transformers holds the decompressed weights in bf16 (relative rounding ≤ 2⁻⁹ per
        # weight); through two random layers that moves logits of magnitude ~1.5 by ≤ ~0.005.
        np.testing.assert_allclose(theirs, ours, atol=2e-2, rtol=0)


def unpack_along(words, bits, count, axis):
    """Little-endian bitstream of `bits`-wide fields along `axis` of uint32 `words`."""
    w = np.moveaxis(words.astype(np.uint32), axis, 0).astype(np.uint64)
    out = np.zeros((count,) + w.shape[1:], dtype=np.int64)
    for i in range(count):
        bit = i * bits
        word, off = divmod(bit, 32)
        v = w[word] >> np.uint64(off)
        if off + bits > 32:
            v |= w[word + 1] << np.uint64(32 - off)
        out[i] = (v & np.uint64((1 << bits) - 1)).astype(np.int64)
    return np.moveaxis(out, 0, axis)


@pytest.mark.parametrize("name,bits", [("gptq_w4_actorder", 4), ("gptq_w4_asym", 4),
                                       ("gptq_w3_g32", 3), ("gptq_w8_rtn", 8)])
def test_gptq_export_layout(nibble_bin, tiny, name, bits):
    out, _ = quantize(nibble_bin, tiny, name, *ROUND_TRIP[name])
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    side = json.loads((out / "quantize_config.json").read_text())
    assert config == side
    assert config["quant_method"] == "gptq" and config["checkpoint_format"] == "gptq"
    assert config["bits"] == bits
    for key in ("bits", "group_size", "sym", "desc_act"):
        assert key in config  # vLLM picks gptq_marlin only when all four are present
    tensors = safetensors_torch.load_file(str(out / "model.safetensors"))
    deq = dequantized(tiny, name)
    for key, ref in deq.items():
        p = key[: -len(".weight")]
        qweight = tensors[p + ".qweight"].numpy().view(np.uint32)
        qzeros = tensors[p + ".qzeros"].numpy().view(np.uint32)
        scales = tensors[p + ".scales"].float().numpy()
        g_idx = tensors[p + ".g_idx"].numpy()
        assert tensors[p + ".scales"].dtype == torch.float16
        n, k = ref.shape
        q = unpack_along(qweight, bits, k, 0)  # [K, N]
        zeros = unpack_along(qzeros, bits, n, 1) + 1  # v1: stored z − 1, per field
        if config["sym"]:
            assert (zeros == 2 ** (bits - 1)).all()
            if bits == 4:
                assert (qzeros == 0x77777777).all()
        else:
            assert (zeros >= 1).all()
        group = config["group_size"] if config["group_size"] != -1 else k
        if not config["desc_act"] or config.get("static_groups"):
            assert (g_idx == np.arange(k) // group).all()
        w = (q - zeros[g_idx]) * scales[g_idx]  # [K, N]
        np.testing.assert_array_equal(w.T.astype(np.float32), ref.numpy(), err_msg=key)


def test_awq_export_layout(nibble_bin, tiny):
    name = "awq_w4"
    out, _ = quantize(nibble_bin, tiny, name, *ROUND_TRIP[name])
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config == {"quant_method": "awq", "zero_point": True, "group_size": 32, "bits": 4,
                      "version": "gemm", "modules_to_not_convert": None}
    tensors = safetensors_torch.load_file(str(out / "model.safetensors"))
    reverse = [0, 4, 1, 5, 2, 6, 3, 7]
    for key, ref in dequantized(tiny, name).items():
        p = key[: -len(".weight")]
        qweight = tensors[p + ".qweight"].numpy().view(np.uint32)  # [K, N/8]
        qzeros = tensors[p + ".qzeros"].numpy().view(np.uint32)
        scales = tensors[p + ".scales"].float().numpy()
        n, k = ref.shape

        def unpack(words):
            cols = [(words >> np.uint32(4 * reverse[r])) & np.uint32(15) for r in range(8)]
            return np.stack(cols, axis=-1).reshape(words.shape[0], -1).astype(np.int64)

        q, z = unpack(qweight), unpack(qzeros)
        g = np.arange(k) // 32
        w = (q - z[g]) * scales[g]
        np.testing.assert_array_equal(w.T.astype(np.float32), ref.numpy(), err_msg=key)


@pytest.mark.parametrize("name", ["fp8_static", "fp8_block"])
def test_fp8_export_layout(nibble_bin, tiny, name):
    out, _ = quantize(nibble_bin, tiny, name, *ROUND_TRIP[name])
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "fp8" and config["fmt"] == "e4m3"
    tensors = safetensors_torch.load_file(str(out / "model.safetensors"))
    for key, ref in dequantized(tiny, name).items():
        p = key[: -len(".weight")]
        w = tensors[p + ".weight"]
        assert w.dtype == torch.float8_e4m3fn
        if name == "fp8_block":
            assert config["weight_block_size"] == [128, 128]
            assert config["activation_scheme"] == "dynamic"
            s = tensors[p + ".weight_scale_inv"]
            full = s.repeat_interleave(128, 0).repeat_interleave(128, 1)[: w.shape[0], : w.shape[1]]
        else:
            assert config["activation_scheme"] == "static"
            assert tensors[p + ".input_scale"].item() > 0
            full = tensors[p + ".weight_scale"]
        assert torch.equal(w.float() * full, ref), key


E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], np.float32)


def test_modelopt_nvfp4_layout(nibble_bin, tiny):
    name = "modelopt_nvfp4"
    out, _ = quantize(nibble_bin, tiny, name, *ROUND_TRIP[name])
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "modelopt" and config["quant_algo"] == "NVFP4"
    side = json.loads((out / "hf_quant_config.json").read_text())["quantization"]
    assert side["quant_algo"] == "NVFP4" and side["group_size"] == 16
    assert "kv_cache_quant_algo" in side and "exclude_modules" in side
    tensors = safetensors_torch.load_file(str(out / "model.safetensors"))
    for key, ref in dequantized(tiny, name).items():
        p = key[: -len(".weight")]
        packed = tensors[p + ".weight"].numpy()
        codes = np.stack([packed & 15, packed >> 4], axis=-1).reshape(packed.shape[0], -1)
        scale = tensors[p + ".weight_scale"].float().numpy().repeat(16, axis=1)
        w = E2M1[codes] * scale * tensors[p + ".weight_scale_2"].item()
        np.testing.assert_array_equal(w.astype(np.float32), ref.numpy(), err_msg=key)
        assert tensors[p + ".input_scale"].item() > 0
    # Fused shards share the second-level scale (vLLM keeps one per fused layer).
    for layer in range(2):
        a = f"model.layers.{layer}."
        qkv = {tensors[a + f"self_attn.{x}_proj.weight_scale_2"].item() for x in "qkv"}
        gu = {tensors[a + f"mlp.{x}_proj.weight_scale_2"].item() for x in ("gate", "up")}
        assert len(qkv) == 1 and len(gu) == 1


def test_save_and_load_calibration(nibble_bin, tiny):
    stats = tiny / "calibration"
    a, _ = quantize(nibble_bin, tiny, "saved", "--scheme", "W4A16", "--group-size", "32",
                    "--save-calibration", stats)
    assert (stats / "layer_0.safetensors").exists() and (stats / "layer_1.safetensors").exists()
    b, r = quantize(nibble_bin, tiny, "loaded", "--scheme", "W4A16", "--group-size", "32",
                    "--load-calibration", stats)
    da, db = dequantized(tiny, "saved"), dequantized(tiny, "loaded")
    for key in da:
        assert torch.equal(da[key], db[key]), key


LLMCOMPRESSOR_RECIPE = """\
quant_stage:
  quant_modifiers:
    SmoothQuantModifier:
      smoothing_strength: 0.8
    GPTQModifier:
      targets: ["Linear"]
      scheme: W8A8
      ignore: ["lm_head", 're:.*layers\\.1\\.mlp\\.down_proj$']
      dampening_frac: 0.02
"""


def test_llm_compressor_yaml_recipe(nibble_bin, tiny):
    """A recipe as LLM Compressor documents it quantizes exactly like the equivalent flags."""
    (tiny / "recipe.yaml").write_text(LLMCOMPRESSOR_RECIPE)
    a, _ = quantize(nibble_bin, tiny, "yaml", "--recipe", tiny / "recipe.yaml")
    b, _ = quantize(nibble_bin, tiny, "yaml_flags", "--scheme", "W8A8", "--method",
                    "smoothquant+gptq", "--smoothquant-alpha", "0.8", "--damp-percent", "0.02",
                    "--ignore", "re:.*layers\\.1\\.mlp\\.down_proj$")
    da, db = dequantized(tiny, "yaml"), dequantized(tiny, "yaml_flags")
    assert set(da) == set(db) and "model.layers.1.mlp.down_proj.weight" not in da
    for key in da:
        assert torch.equal(da[key], db[key]), key
    config = json.loads((a / "config.json").read_text())["quantization_config"]
    assert "model.layers.1.mlp.down_proj" in config["ignore"]
    # Unknown keys are refused, naming the key and where it is.
    (tiny / "bad.yaml").write_text(LLMCOMPRESSOR_RECIPE.replace("dampening_frac", "damping"))
    _, r = quantize(nibble_bin, tiny, "yaml_bad", "--recipe", tiny / "bad.yaml", check=False)
    assert r.returncode != 0 and "unknown key 'damping'" in r.stderr, r.stderr
    assert "GPTQModifier" in r.stderr
    assert not (tiny / "yaml_bad").exists()


def test_tokenizer_and_config_carried(nibble_bin, tiny):
    src = tiny / "with_tokenizer"
    if not src.exists():
        subprocess.run(["cp", "-r", str(tiny / "model"), str(src)], check=True)
        (src / "tokenizer_config.json").write_text(
            json.dumps({"chat_template": "{{ messages }}", "eos_token": "<e>"}))
        (src / "generation_config.json").write_text(json.dumps({"max_new_tokens": 7}))
    out = tiny / "carried"
    r = run([nibble_bin, "quantize", "-q", "-m", src, "--scheme", "W8A16", "--method", "rtn",
             "--out", out, "--force"])
    assert r.returncode == 0, r.stderr
    for f in ("tokenizer_config.json", "generation_config.json"):
        assert (out / f).read_text() == (src / f).read_text()
    config = json.loads((out / "config.json").read_text())
    source = json.loads((src / "config.json").read_text())
    assert {k: v for k, v in config.items() if k != "quantization_config"} == source
    assert config["quantization_config"]["ignore"] == ["lm_head"] or \
        config["quantization_config"]["ignore"] == []


def test_ignored_modules_stay_dense(nibble_bin, tiny):
    out, _ = quantize(nibble_bin, tiny, "ignored", "--scheme", "W4A16", "--ignore",
                      "mlp.down_proj")
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert "model.layers.0.mlp.down_proj" in config["ignore"]
    tensors = safetensors_torch.load_file(str(out / "model.safetensors"))
    assert tensors["model.layers.1.mlp.down_proj.weight"].dtype == torch.bfloat16
    assert "model.layers.1.mlp.up_proj.weight_packed" in tensors
    mem = np.load(tiny / "ignored.mem" / "logits_0.npy")
    np.testing.assert_array_equal(nibble_logits(nibble_bin, tiny, out, "ignored"), mem)


def test_refusals_leave_nothing(nibble_bin, tiny, shared_data):
    out = tiny / "refused"
    cases = [
        (["--calib", shared_data / "text" / "wikitext-2-raw-test.txt"], "wikitext"),
        (["--scheme", "FP8_DYNAMIC", "--format", "gptq"], "--format gptq"),
        (["--scheme", "W8A8", "--format", "awq"], "--format awq"),
        (["--scheme", "FP8", "--method", "gptq"], "--method gptq"),
        (["--scheme", "W5A16"], "--scheme"),
        (["--method", "smoothquant"], "SmoothQuant"),
    ]
    for args, needle in cases:
        r = run([nibble_bin, "quantize", "-q", "-m", tiny / "model", "--out", out, *args])
        assert r.returncode != 0 and needle in r.stderr, (args, r.stderr)
        assert not out.exists()
        assert not list(tiny.glob("refused.partial-*"))
    (tiny / "exists").mkdir(exist_ok=True)
    r = run([nibble_bin, "quantize", "-q", "-m", tiny / "model", "--scheme", "W8A16",
             "--method", "rtn", "--out", tiny / "exists"])
    assert r.returncode != 0 and "--force" in r.stderr


GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
              "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
              "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def llama_gguf_rows(w, n_head):
    """convert_hf_to_gguf's q/k row permutation (Meta's interleaved RoPE layout)."""
    rows, k = w.shape
    return w.reshape(n_head, 2, rows // n_head // 2, k).swapaxes(1, 2).reshape(rows, k)


def tiny_with_vocab(nibble_bin, tiny, default_gguf):
    """GGUF needs a tokenizer: the default model's, on a tiny model with its vocabulary size."""
    src = tiny / "tiny_vocab"
    if not (src / "tokenizer.json").exists():
        hf = tiny / "default_hf"
        r = run([nibble_bin, "convert", default_gguf, "--out", hf, "--dtype", "bfloat16",
                 "--force"])
        assert r.returncode == 0, r.stderr
        config = dict(TINY_CONFIG, vocab_size=json.loads((hf / "config.json").read_text())[
            "vocab_size"])
        (tiny / "tiny_vocab.json").write_text(json.dumps(config))
        r = run([nibble_bin, "synth", "--config", tiny / "tiny_vocab.json", "--out", src,
                 "--dtype", "bfloat16", "--force"])
        assert r.returncode == 0, r.stderr
        for f in ("tokenizer.json", "tokenizer_config.json"):
            (src / f).write_bytes((hf / f).read_bytes())
    return src


# imatrix: the importance-weighted searches (calibrated on the tiny calibration set).
@pytest.mark.parametrize("scheme,method", [("Q8_0", "rtn"), ("Q4_0", "rtn"), ("Q4_K", "rtn"),
                                           ("Q4_0", "imatrix"), ("Q4_K", "imatrix")])
def test_gguf_export_codes_and_logits(nibble_bin, tiny, default_gguf, scheme, method):
    gguf = pytest.importorskip("gguf")
    src = tiny_with_vocab(nibble_bin, tiny, default_gguf)
    name = f"gguf_{scheme}_{method}"
    out = tiny / f"{name}.gguf"
    calib = ["--calib", tiny / "calib.json", "--nsamples", "16", "--seqlen", "64"]
    r = run([nibble_bin, "quantize", "-q", "-m", src, "--scheme", scheme, "--out", out, "--force",
             "--method", method, *(calib if method == "imatrix" else []),
             "--logits-prompts", tiny / "prompts.json", "--logits-out", tiny / f"{name}.mem",
             "--save-dequantized", tiny / f"{name}.deq.safetensors"])
    assert r.returncode == 0, r.stderr
    reader = gguf.GGUFReader(str(out))
    tensors = {t.name: t for t in reader.tensors}
    deq = dequantized(tiny, name)
    for key, ref in deq.items():
        layer, rest = key[len("model.layers."):].split(".", 1)
        t = tensors[f"blk.{layer}.{GGUF_NAMES[rest[: -len('.weight')]]}.weight"]
        # Q4_K needs rows of whole 256-element super-blocks; shorter rows fall back to Q5_0.
        k = ref.shape[1]
        assert t.tensor_type.name == (scheme if scheme != "Q4_K" or k % 256 == 0 else "Q5_0")
        theirs = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ref.shape)
        expected = ref.numpy()
        if rest.startswith("self_attn.q_proj"):
            expected = llama_gguf_rows(expected, TINY_CONFIG["num_attention_heads"])
        if rest.startswith("self_attn.k_proj"):
            expected = llama_gguf_rows(expected, TINY_CONFIG["num_key_value_heads"])
        # gguf-py decodes the same blocks: d·q with d an f16 — exact in f32.
        np.testing.assert_array_equal(theirs.astype(np.float32), expected, err_msg=key)
    mem = np.load(tiny / f"{name}.mem" / "logits_0.npy")
    np.testing.assert_array_equal(nibble_logits(nibble_bin, tiny, out, name), mem)
    # Close to the unquantized model: relative RMS logit error of this random-weight model
    # (measured 0.009 Q8_0, 0.16 Q4_0, 0.07 Q4_K with its Q5_0 fallback; bounds ~2x that).
    dense = nibble_logits(nibble_bin, tiny, src, "tiny_vocab")
    rel = np.sqrt(((mem - dense) ** 2).mean() / (dense ** 2).mean())
    assert rel < {"Q8_0": 0.02, "Q4_0": 0.35, "Q4_K": 0.15}[scheme], rel
    if method == "imatrix":
        # The weighting changed blocks: the weights differ from the reference quantizers'.
        rtn = dequantized(tiny, f"gguf_{scheme}_rtn") if (
            tiny / f"gguf_{scheme}_rtn.deq.safetensors").exists() else None
        if rtn is not None:
            assert any(not torch.equal(rtn[k], deq[k]) for k in deq)


def test_gguf_imatrix_defaults_and_refusals(nibble_bin, tiny, default_gguf):
    src = tiny_with_vocab(nibble_bin, tiny, default_gguf)
    calib = ["--calib", tiny / "calib.json", "--nsamples", "4", "--seqlen", "32"]
    # With calibration data, Q4_K defaults to the importance-weighted search.
    report = tiny / "gguf_default.json"
    r = run([nibble_bin, "quantize", "-q", "-m", src, "--scheme", "Q4_K", *calib, "--out",
             tiny / "gguf_default.gguf", "--force", "--report", report])
    assert r.returncode == 0, r.stderr
    assert json.loads(report.read_text())["method"] == "imatrix"
    # Q8_0 has nothing for the importance to steer; GPTQ is not a GGUF method.
    for scheme, method, message in [("Q8_0", "imatrix", "Q8_0 has no scale search"),
                                    ("Q4_K", "gptq", "apply to integer schemes"),
                                    ("W4A16", "imatrix", "--method imatrix weights GGUF")]:
        out = tiny / "gguf_refused.gguf"
        r = run([nibble_bin, "quantize", "-q", "-m", src, "--scheme", scheme, "--method",
                 method, *calib, "--out", out, "--force"])
        assert r.returncode != 0 and message in r.stderr, (scheme, method, r.stderr)
        assert not out.exists()


def test_save_imatrix_is_llama_cpp_imatrix(nibble_bin, tiny):
    """--save-imatrix writes llama.cpp's GGUF imatrix: Σx² per input column of each linear
    (`in_sum2`) and the token count (`counts`); layer 0's q/k/v inputs are the normed embeddings,
    recomputed here with transformers."""
    gguf = pytest.importorskip("gguf")
    transformers = pytest.importorskip("transformers")
    path = tiny / "imatrix.gguf"
    quantize(nibble_bin, tiny, "ct_w8_imatrix_file", "--scheme", "W8A16", "--method", "gptq",
             "--save-imatrix", path)
    reader = gguf.GGUFReader(str(path))
    assert bytes(reader.fields["general.type"].parts[-1]).decode() == "imatrix"
    tensors = {t.name: np.asarray(t.data, dtype=np.float32).reshape(-1) for t in reader.tensors}
    names = {f"blk.{i}.{g}.weight" for i in range(2) for g in GGUF_NAMES.values()}
    assert set(tensors) == {n + s for n in names for s in (".in_sum2", ".counts")}
    assert all(tensors[n + ".counts"][0] == 16 * 64 for n in names)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tiny / "model"),
                                                              dtype=torch.float32)
    ids = torch.tensor(json.loads((tiny / "calib.json").read_text()))
    with torch.no_grad():
        x = model.model.layers[0].input_layernorm(model.model.embed_tokens(ids))
    expected = (x.double() ** 2).sum(dim=(0, 1)).numpy()
    for g in ("attn_q", "attn_k", "attn_v"):
        np.testing.assert_allclose(tensors[f"blk.0.{g}.weight.in_sum2"], expected, rtol=1e-4)
