"""Pre-quantized checkpoint loaders against their producers.

compressed-tensors fixtures are written by the real library (its ModelCompressor packs and
compresses a tiny random Llama) and nibble's dequantized weights must equal the library's own
decompression. GPTQ / AWQ / fp8 / ModelOpt producers need a GPU, so their fixtures are packed
here by small numpy re-implementations of the documented packing (AutoGPTQ's pack loop, the
AWQ interleave), and nibble must reproduce the chosen codes exactly. A few fixtures also run
through `nibble logits` against transformers on the same dense weights.
"""
import json
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

HIDDEN, INTER, LAYERS, VOCAB = 64, 128, 2, 128


def tiny_llama(seed):
    cfg = transformers.LlamaConfig(hidden_size=HIDDEN, intermediate_size=INTER,
                                   num_hidden_layers=LAYERS, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=VOCAB,
                                   max_position_embeddings=128, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return cfg, transformers.LlamaForCausalLM(cfg).eval()


def linears(model):
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and n != "lm_head"]


def write_checkpoint(path, cfg, model, replaced, extra, quant_config, side_files=None):
    """model's tensors minus `<p>.weight` of replaced modules, plus `extra` (name -> tensor)."""
    path.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
          if not (k.endswith(".weight") and k[:-len(".weight")] in replaced)}
    sd.update(extra)
    safetensors_torch.save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    cfg.save_pretrained(path)
    if quant_config is not None:
        config = json.loads((path / "config.json").read_text())
        config["quantization_config"] = quant_config
        (path / "config.json").write_text(json.dumps(config, indent=2))
    for name, body in (side_files or {}).items():
        (path / name).write_text(json.dumps(body))


def nibble_dequant(nibble_bin, path, tmp_path, extra_args=()):
    out = tmp_path / "deq"
    subprocess.run([str(nibble_bin), "quant", "dequant", str(path), str(out), *extra_args],
                   check=True, capture_output=True)
    return {p.name[:-len(".weight.npy")]: np.load(p) for p in out.glob("*.weight.npy")}


def nibble_fails(nibble_bin, path, *extra_args):
    r = subprocess.run([str(nibble_bin), "quant", "info", str(path), *extra_args],
                       capture_output=True, text=True)
    assert r.returncode != 0, r.stdout
    return r.stderr


def logits_match(nibble_bin, path, model, dense, tmp_path, bound):
    """nibble logits on the checkpoint vs transformers with `dense` weights in float32."""
    with torch.no_grad():
        for name, m in linears(model):
            if name in dense:
                m.weight.copy_(torch.from_numpy(np.asarray(dense[name], np.float32)))
    model = model.float()
    rng = np.random.default_rng()
    ids = rng.integers(0, VOCAB, size=12).tolist()
    (tmp_path / "p.json").write_text(json.dumps([ids]))
    subprocess.run([str(nibble_bin), "logits", "--model-path", str(path), "--dtype", "float32",
                    "--prompts", str(tmp_path / "p.json"), "--out", str(tmp_path / "lo")],
                   check=True, capture_output=True)
    ours = np.load(tmp_path / "lo" / "logits_0.npy")
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    err = float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))
    assert err < bound, err


# ---- compressed-tensors (written by the library) -----------------------------------------

ct = pytest.importorskip("compressed_tensors")
from compressed_tensors.compressors import ModelCompressor  # noqa: E402
from compressed_tensors.quantization import (  # noqa: E402
    QuantizationArgs, QuantizationConfig, QuantizationScheme, apply_quantization_config)
from compressed_tensors.quantization.utils import calculate_qparams  # noqa: E402


def observe(weight, args):
    """Min/max over each scale block, the way an observer sees it."""
    w = weight.detach().float()
    n, k = w.shape
    s = args.strategy.value if hasattr(args.strategy, "value") else args.strategy
    if s == "tensor":
        return w.amin().reshape(1), w.amax().reshape(1)
    if s == "channel":
        return w.amin(1, keepdim=True), w.amax(1, keepdim=True)
    if s == "group":
        g = w.reshape(n, k // args.group_size, args.group_size)
        return g.amin(-1), g.amax(-1)
    if s == "block":
        br, bc = args.block_structure
        b = w.reshape(n // br, br, k // bc, bc)
        return b.amin((1, 3)), b.amax((1, 3))
    raise ValueError(s)


CT_CASES = {
    "w4a16_sym_g32": ("pack-quantized", dict(num_bits=4, type="int", symmetric=True, strategy="group", group_size=32), None),
    "w4a16_asym_g32": ("pack-quantized", dict(num_bits=4, type="int", symmetric=False, strategy="group", group_size=32), None),
    "w4a16_asym_channel": ("pack-quantized", dict(num_bits=4, type="int", symmetric=False, strategy="channel"), None),
    "w8a16_sym_channel": ("pack-quantized", dict(num_bits=8, type="int", symmetric=True, strategy="channel"), None),
    "w8a16_asym_g32": ("pack-quantized", dict(num_bits=8, type="int", symmetric=False, strategy="group", group_size=32), None),
    "w8a8_int8": ("int-quantized", dict(num_bits=8, type="int", symmetric=True, strategy="channel"),
                  dict(num_bits=8, type="int", symmetric=True, strategy="token", dynamic=True)),
    "w8a8_int8_asym_tensor": ("int-quantized", dict(num_bits=8, type="int", symmetric=False, strategy="tensor"),
                              dict(num_bits=8, type="int", symmetric=True, strategy="token", dynamic=True)),
    "fp8_static_tensor": ("float-quantized", dict(num_bits=8, type="float", symmetric=True, strategy="tensor"),
                          dict(num_bits=8, type="float", symmetric=True, strategy="tensor", dynamic=False)),
    "fp8_dynamic_channel": ("float-quantized", dict(num_bits=8, type="float", symmetric=True, strategy="channel"),
                            dict(num_bits=8, type="float", symmetric=True, strategy="token", dynamic=True)),
    "fp8_block_32": ("float-quantized", dict(num_bits=8, type="float", symmetric=True, strategy="block", block_structure=[32, 32]),
                     dict(num_bits=8, type="float", symmetric=True, strategy="group", group_size=32, dynamic=True)),
    "fp8_weight_only_naive": ("naive-quantized", dict(num_bits=8, type="float", symmetric=True, strategy="channel"), None),
}


def make_ct_checkpoint(path, case, seed):
    fmt, wargs, iargs = CT_CASES[case]
    cfg, model = tiny_llama(seed)
    model = model.to(torch.bfloat16)
    wq = QuantizationArgs(**wargs)
    scheme = QuantizationScheme(targets=["Linear"], weights=wq,
                                input_activations=QuantizationArgs(**iargs) if iargs else None)
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme},
                                                        ignore=["lm_head"]))
    for _, m in linears(model):
        lo, hi = observe(m.weight, wq)
        scale, zp = calculate_qparams(lo, hi, wq)
        m.weight_scale.data.copy_(scale.reshape(m.weight_scale.shape))
        if hasattr(m, "weight_zero_point"):
            m.weight_zero_point.data.copy_(zp.reshape(m.weight_zero_point.shape))
        if hasattr(m, "input_scale"):
            m.input_scale.data.fill_(0.05)
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format=fmt)
    compressor.compress_model(model)
    model.save_pretrained(path)
    compressor.update_config(path)
    # The library's own decompression is the expected dense weight.
    compressor.decompress_model(model)
    return {n: m.weight.detach().clone() for n, m in linears(model)}


@pytest.mark.parametrize("case", sorted(CT_CASES))
def test_compressed_tensors_matches_library(nibble_bin, tmp_path, case):
    seed = int(np.random.default_rng().integers(1 << 30))
    expected = make_ct_checkpoint(tmp_path / "ckpt", case, seed)
    ours = nibble_dequant(nibble_bin, tmp_path / "ckpt", tmp_path)
    assert sorted(ours) == sorted(expected)
    for name, ref in expected.items():
        got = torch.from_numpy(ours[name])
        assert got.shape == ref.shape, name
        # The library multiplies in the scale dtype (bf16); nibble keeps the exact f32 product,
        # which must round to the library's value.
        assert torch.equal(got.to(ref.dtype), ref), f"{case}: {name}"


def test_compressed_tensors_w4a16_runs(nibble_bin, tmp_path):
    expected = make_ct_checkpoint(tmp_path / "ckpt", "w4a16_asym_g32", 7)
    _, model = tiny_llama(7)
    ours = nibble_dequant(nibble_bin, tmp_path / "ckpt", tmp_path)
    model.lm_head.weight.data.copy_(model.lm_head.weight.to(torch.bfloat16).float())
    # The library rounds its output to bf16; check nibble's run against that model.
    dense = {n: w.float().numpy() for n, w in expected.items()}
    for n in dense:
        assert np.max(np.abs(dense[n] - ours[n])) <= np.max(np.abs(dense[n])) * 2 ** -8
    ckpt_state = safetensors_torch.load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    with torch.no_grad():
        for k, v in ckpt_state.items():
            if k in dict(model.named_parameters()) and v.is_floating_point():
                dict(model.named_parameters())[k].copy_(v.float())
    logits_match(nibble_bin, tmp_path / "ckpt", model, ours, tmp_path, bound=1e-4)


def test_compressed_tensors_legacy_key_and_ignore_regex(nibble_bin, tmp_path):
    make_ct_checkpoint(tmp_path / "ckpt", "w8a8_int8", 3)
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["compression_config"] = config.pop("quantization_config")
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    assert len(nibble_dequant(nibble_bin, tmp_path / "ckpt", tmp_path)) == 7 * LAYERS
    # An ignore regex covering quantized layers contradicts the stored tensors: refused.
    config["compression_config"]["ignore"] = ["lm_head", "re:.*mlp\\.down_proj$"]
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    err = nibble_fails(nibble_bin, tmp_path / "ckpt")
    assert "down_proj" in err and "leaves it unquantized" in err


def test_compressed_tensors_refusals(nibble_bin, tmp_path):
    make_ct_checkpoint(tmp_path / "ckpt", "fp8_dynamic_channel", 5)
    path = tmp_path / "ckpt"
    base = json.loads((path / "config.json").read_text())

    def with_qc(**changes):
        config = json.loads(json.dumps(base))
        config["quantization_config"].update(changes)
        (path / "config.json").write_text(json.dumps(config))

    with_qc(sparsity_config={"format": "sparse-24-bitmask", "sparsity_structure": "2:4"})
    assert "sparse" in nibble_fails(nibble_bin, path)
    with_qc(transform_config={"config_groups": {"u": {"type": "hadamard"}}})
    assert "transform_config" in nibble_fails(nibble_bin, path)
    with_qc()
    err = nibble_fails(nibble_bin, path, "--quantization", "w8a8_int8")
    assert "not int8 W8A8 weights" in err
    info = subprocess.run([str(nibble_bin), "quant", "info", str(path), "--quantization", "w8a8_fp8"],
                          check=True, capture_output=True, text=True)
    assert json.loads(info.stdout)["method"] == "w8a8_fp8"
    err = nibble_fails(nibble_bin, path, "--quantization", "awq")
    assert ("Quantization method specified in the model config (compressed-tensors) does not "
            "match the quantization method specified in the quantization argument (awq)") in err


# ---- GPTQ (numpy packing after AutoGPTQ's pack loop) ---------------------------------------

def autogptq_pack(values, bits):
    """Packs uint codes [M, X] along axis 0 into int32 [M*bits/32, X] as AutoGPTQ's pack does."""
    v = values.astype(np.uint64)
    m = v.shape[0]
    out = np.zeros((m * bits // 32, v.shape[1]), np.uint64)
    i = row = 0
    while row < out.shape[0]:
        if bits in (2, 4, 8):
            for j in range(i, i + 32 // bits):
                out[row] |= v[j] << np.uint64(bits * (j - i))
            i += 32 // bits
            row += 1
        else:  # 3-bit: 10 | 1 | 10 | 1 | 10 over three words
            for j in range(i, i + 10):
                out[row] |= v[j] << np.uint64(3 * (j - i))
            i += 10
            out[row] |= v[i] << np.uint64(30)
            row += 1
            out[row] |= (v[i] >> np.uint64(2)) & np.uint64(1)
            i += 1
            for j in range(i, i + 10):
                out[row] |= v[j] << np.uint64(3 * (j - i) + 1)
            i += 10
            out[row] |= v[i] << np.uint64(31)
            row += 1
            out[row] |= (v[i] >> np.uint64(1)) & np.uint64(3)
            i += 1
            for j in range(i, i + 10):
                out[row] |= v[j] << np.uint64(3 * (j - i) + 2)
            i += 10
            row += 1
    return (out & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32)


def gptq_layer(rng, n, k, bits, sym, group, desc_act, v2):
    g = k if group == -1 else group
    groups = k // g
    maxq = (1 << bits) - 1
    q = rng.integers(0, maxq + 1, size=(k, n))
    if sym:
        z = np.full((groups, n), 1 << (bits - 1))
    else:  # v1 cannot store a zero point of 0 (see checkpoint-formats.md §1.5)
        z = rng.integers(0 if v2 else 1, maxq + 1, size=(groups, n))
    scales = rng.uniform(0.001, 0.02, size=(groups, n)).astype(np.float16)
    if desc_act and group != -1:
        perm = rng.permutation(k)
        g_idx = np.empty(k, np.int32)
        g_idx[perm] = np.arange(k) // g
    else:
        g_idx = (np.arange(k) // g).astype(np.int32)
    stored_z = z if v2 else z - 1
    tensors = {
        "qweight": torch.from_numpy(autogptq_pack(q, bits)),
        "qzeros": torch.from_numpy(autogptq_pack(stored_z.T, bits).T.copy()),
        "scales": torch.from_numpy(scales),
        "g_idx": torch.from_numpy(g_idx),
    }
    dense = ((q - z[g_idx]).astype(np.float32) * scales[g_idx].astype(np.float32)).T
    return tensors, np.ascontiguousarray(dense)


def make_gptq_checkpoint(path, bits, sym, group, desc_act, fmt, seed=None, lm_head=False):
    cfg, model = tiny_llama(0)
    rng = np.random.default_rng(seed)
    extra, dense, replaced = {}, {}, set()
    mods = linears(model) + ([("lm_head", model.lm_head)] if lm_head else [])
    for name, m in mods:
        n, k = m.weight.shape
        tensors, dense[name] = gptq_layer(rng, n, k, bits, sym, group, desc_act, fmt == "gptq_v2")
        extra.update({f"{name}.{s}": t for s, t in tensors.items()})
        replaced.add(name)
    qc = {"quant_method": "gptq", "bits": bits, "group_size": group, "sym": sym,
          "desc_act": desc_act, "checkpoint_format": fmt, "lm_head": lm_head,
          "static_groups": False, "true_sequential": True, "damp_percent": 0.01}
    write_checkpoint(path, cfg, model, replaced, extra, qc)
    return model, dense


GPTQ_CASES = [
    (4, True, 32, False, "gptq"), (4, False, 32, True, "gptq"), (3, False, 32, True, "gptq"),
    (3, True, -1, False, "gptq"), (2, False, 32, False, "gptq_v2"), (2, True, 32, True, "gptq"),
    (8, True, 32, True, "gptq"), (8, False, -1, False, "gptq_v2"), (4, False, 64, False, "gptq_v2"),
    (3, False, 32, False, "gptq_v2"),
]


@pytest.mark.parametrize("bits,sym,group,desc_act,fmt", GPTQ_CASES)
def test_gptq_matches_reference_packing(nibble_bin, tmp_path, bits, sym, group, desc_act, fmt):
    _, dense = make_gptq_checkpoint(tmp_path / "ckpt", bits, sym, group, desc_act, fmt)
    ours = nibble_dequant(nibble_bin, tmp_path / "ckpt", tmp_path)
    assert sorted(ours) == sorted(dense)
    for name in dense:
        np.testing.assert_array_equal(ours[name], dense[name], err_msg=name)


def test_gptq_runs_with_quantized_lm_head(nibble_bin, tmp_path):
    model, dense = make_gptq_checkpoint(tmp_path / "ckpt", 4, False, 32, True, "gptq", lm_head=True)
    ours = nibble_dequant(nibble_bin, tmp_path / "ckpt", tmp_path)
    np.testing.assert_array_equal(ours["lm_head"], dense["lm_head"])
    with torch.no_grad():
        model.lm_head.weight.copy_(torch.from_numpy(dense["lm_head"]))
    logits_match(nibble_bin, tmp_path / "ckpt", model, dense, tmp_path, bound=1e-4)


def test_gptq_refusals(nibble_bin, tmp_path):
    path = tmp_path / "ckpt"
    make_gptq_checkpoint(path, 4, True, 32, False, "gptq")
    err = nibble_fails(nibble_bin, path, "--quantization", "fp8")
    assert ("Quantization method specified in the model config (gptq) does not match the "
            "quantization method specified in the quantization argument (fp8)") in err
    subprocess.run([str(nibble_bin), "quant", "info", str(path), "--quantization", "gptq_marlin"],
                   check=True, capture_output=True)
    config = json.loads((path / "config.json").read_text())
    config["quantization_config"]["checkpoint_format"] = "marlin"
    (path / "config.json").write_text(json.dumps(config))
    assert "marlin" in nibble_fails(nibble_bin, path)
    # Old AutoGPTQ: no quantization_config, only quantize_config.json without quant_method.
    qc = config.pop("quantization_config")
    qc.pop("quant_method")
    qc["checkpoint_format"] = "gptq"
    (path / "config.json").write_text(json.dumps(config))
    (path / "quantize_config.json").write_text(json.dumps(qc))
    assert len(nibble_dequant(nibble_bin, path, tmp_path)) == 7 * LAYERS


def test_gptq_dynamic_excludes_modules(nibble_bin, tmp_path):
    path = tmp_path / "ckpt"
    cfg, model = tiny_llama(0)
    rng = np.random.default_rng()
    extra, replaced = {}, set()
    for name, m in linears(model):
        if "layers.1." in name:
            continue  # left dense by the "-:" rule below
        n, k = m.weight.shape
        bits = 8 if "mlp" in name else 4
        tensors, _ = gptq_layer(rng, n, k, bits, True, 32, False, False)
        extra.update({f"{name}.{s}": t for s, t in tensors.items()})
        replaced.add(name)
    qc = {"quant_method": "gptq", "bits": 4, "group_size": 32, "sym": True, "desc_act": False,
          "dynamic": {"-:model\\.layers\\.1\\..*": {}, "+:.*mlp.*": {"bits": 8}}}
    write_checkpoint(path, cfg, model, replaced, extra, qc)
    info = json.loads(subprocess.run([str(nibble_bin), "quant", "info", str(path)], check=True,
                                     capture_output=True, text=True).stdout)
    elems = {l["module"]: l["elem"] for l in info["layers"]}
    assert len(elems) == 7
    assert elems["model.layers.0.mlp.up_proj"] == "int8"
    assert elems["model.layers.0.self_attn.q_proj"] == "int4"


# ---- AWQ GEMM --------------------------------------------------------------------------------

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def awq_pack(codes):
    """[R, N] 4-bit codes -> int32 [R, N/8], slot i of word c holding column 8c + ORDER[i]."""
    r, n = codes.shape
    out = np.zeros((r, n // 8), np.uint32)
    for c in range(n // 8):
        for i, col in enumerate(AWQ_ORDER):
            out[:, c] |= codes[:, 8 * c + col].astype(np.uint32) << np.uint32(4 * i)
    return out.view(np.int32)


def test_awq_gemm_matches_reference_and_runs(nibble_bin, tmp_path):
    path = tmp_path / "ckpt"
    cfg, model = tiny_llama(1)
    rng = np.random.default_rng()
    extra, dense, group = {}, {}, 32
    for name, m in linears(model):
        n, k = m.weight.shape
        q = rng.integers(0, 16, size=(k, n))
        z = rng.integers(0, 16, size=(k // group, n))
        s = rng.uniform(0.001, 0.02, size=(k // group, n)).astype(np.float16)
        gi = np.arange(k) // group
        dense[name] = np.ascontiguousarray(((q - z[gi]).astype(np.float32) * s[gi].astype(np.float32)).T)
        extra.update({f"{name}.qweight": torch.from_numpy(awq_pack(q)),
                      f"{name}.qzeros": torch.from_numpy(awq_pack(z)),
                      f"{name}.scales": torch.from_numpy(s)})
    qc = {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True,
          "version": "gemm", "modules_to_not_convert": None}
    write_checkpoint(path, cfg, model, set(dense), extra, qc)
    ours = nibble_dequant(nibble_bin, path, tmp_path)
    for name in dense:
        np.testing.assert_array_equal(ours[name], dense[name], err_msg=name)
    logits_match(nibble_bin, path, model, dense, tmp_path, bound=1e-4)

    config = json.loads((path / "config.json").read_text())
    config["quantization_config"]["version"] = "gemv"
    (path / "config.json").write_text(json.dumps(config))
    err = nibble_fails(nibble_bin, path)
    assert "AWQ version 'gemv' is not supported" in err and "GEMM" in err


# ---- fp8 (quant_method fp8) and ModelOpt -------------------------------------------------------

def fp8_quantize(w, block=None):
    """Per-tensor (block None) or 2-D block scales; torch's e4m3 cast is the encoder."""
    if block is None:
        scale = w.abs().max() / 448.0
        q = (w / scale).clamp(-448, 448).to(torch.float8_e4m3fn)
        return q, scale.reshape(()).float(), (q.float() * scale).numpy()
    br, bc = block
    n, k = w.shape
    b = w.reshape(n // br, br, k // bc, bc)
    scale = b.abs().amax((1, 3)) / 448.0
    q = (b / scale[:, None, :, None]).clamp(-448, 448).to(torch.float8_e4m3fn)
    deq = (q.float() * scale[:, None, :, None]).reshape(n, k)
    return q.reshape(n, k), scale.float(), deq.numpy()


@pytest.mark.parametrize("variant", ["per_tensor_static", "block_32", "modelopt_fp8", "modelopt_nvfp4"])
def test_fp8_family_matches_reference(nibble_bin, tmp_path, variant):
    path = tmp_path / "ckpt"
    cfg, model = tiny_llama(int(np.random.default_rng().integers(1 << 30)))
    rng = np.random.default_rng()
    extra, dense, side = {}, {}, None
    for name, m in linears(model):
        w = m.weight.detach().float()
        if variant == "modelopt_nvfp4":
            q, scale, scale2, dense[name] = nvfp4_quantize(w, rng)
            extra.update({f"{name}.weight": q, f"{name}.weight_scale": scale,
                          f"{name}.weight_scale_2": scale2, f"{name}.input_scale": torch.tensor(0.01)})
            continue
        q, scale, dense[name] = fp8_quantize(w, (32, 32) if variant == "block_32" else None)
        extra[f"{name}.weight"] = q
        extra[f"{name}.weight_scale_inv" if variant == "block_32" else f"{name}.weight_scale"] = scale
        if variant != "block_32":
            extra[f"{name}.input_scale"] = torch.tensor(0.02)
    if variant == "per_tensor_static":
        qc = {"quant_method": "fp8", "activation_scheme": "static", "ignored_layers": ["lm_head"]}
    elif variant == "block_32":
        qc = {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3",
              "weight_block_size": [32, 32]}
    else:
        qc = None
        algo = "FP8" if variant == "modelopt_fp8" else "NVFP4"
        side = {"hf_quant_config.json": {"producer": {"name": "modelopt", "version": "0.35.0"},
                                         "quantization": {"quant_algo": algo, "kv_cache_quant_algo": None,
                                                          "group_size": 16, "exclude_modules": ["lm_head"]}}}
    write_checkpoint(path, cfg, model, set(dense), extra, qc, side)
    ours = nibble_dequant(nibble_bin, path, tmp_path)
    assert sorted(ours) == sorted(dense)
    for name in dense:
        np.testing.assert_array_equal(ours[name], dense[name], err_msg=name)
    if variant in ("block_32", "modelopt_nvfp4"):
        # The reference multiplies unquantized activations; nibble quantizes them as the scheme
        # says (fp8 per token-group: 2^-4 relative per element; NVFP4: e2m1 codes, up to a
        # quarter of each 16-block's max), which moves the logits by a few percent. The
        # activation rounding itself is tested exactly in tests/unit/quant_linear_test.cc.
        bound = 0.1 if variant == "block_32" else 0.3
        logits_match(nibble_bin, path, model, dense, tmp_path, bound=bound)


E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], np.float32)


def nvfp4_quantize(w, rng):
    """ModelOpt layout: U8 [N, K/2] (even element low nibble), e4m3 block-16 scales, f32 scale_2."""
    n, k = w.shape
    codes = rng.integers(0, 16, size=(n, k)).astype(np.uint8)
    scale = (torch.from_numpy(rng.uniform(0.05, 2.0, size=(n, k // 16)).astype(np.float32))
             .to(torch.float8_e4m3fn))
    scale2 = torch.tensor(float(rng.uniform(0.001, 0.01)), dtype=torch.float32)
    values = np.where(codes & 8, -1.0, 1.0).astype(np.float32) * E2M1[codes & 7]
    per_elem = np.repeat(scale.float().numpy(), 16, axis=1)
    dense = (values * per_elem).astype(np.float32) * np.float32(scale2.item())
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)
    return torch.from_numpy(packed), scale, scale2, dense
