"""Online quantization (`nibble quant_online`) against torch re-implementations of the producers.

torchao and bitsandbytes are not installed here (bitsandbytes needs a GPU), so each method is
re-implemented below in a few lines of torch following the producer's code (SGLang's
per_token_group_quant_fp8, torchao's choose_qparams_affine / quantize_affine on bf16 weights,
bitsandbytes' quantize_4bit), and nibble's codes and scales must equal them bit for bit. The
GGUF types are checked with gguf-py. The bitsandbytes pre-quantized loader reads fixtures
written here with numpy following bitsandbytes' documented serialization (QuantState.as_dict).
"""
import json
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

NF4 = torch.tensor([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                    0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                    0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                    0.7229568362236023, 1.0], dtype=torch.float32)


def bf16_weights(seed, n, k, sigma=0.05):
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, sigma, (n, k)).astype(np.float32)
    w.flat[rng.integers(0, n * k, 6)] *= 8.0  # a few outliers
    return torch.from_numpy(w).to(torch.bfloat16)


def run_online(nibble_bin, tmp_path, w, quantization="", torchao=""):
    n, k = w.shape
    src = tmp_path / "w.f32"
    w.float().numpy().astype("<f4").tofile(src)
    out = tmp_path / f"out-{quantization or torchao}"
    args = [str(nibble_bin), "quant_online", str(src), str(out), "--rows", str(n), "--cols", str(k)]
    if quantization:
        args += ["--quantization", quantization]
    if torchao:
        args += ["--torchao-config", torchao]
    subprocess.run(args, check=True, capture_output=True)
    res = {"info": json.loads((out / "info.json").read_text()),
           "codes": np.fromfile(out / "codes.bin", dtype=np.uint8),
           "dequant": np.load(out / "dequant.npy")}
    for name in ("scales", "float_zeros", "int_zeros"):
        if (out / f"{name}.npy").exists():
            res[name] = np.load(out / f"{name}.npy")
    return res


def unpack_nibbles(codes, n, k):
    b = codes.reshape(n, k // 2)
    return np.stack([b & 15, b >> 4], axis=-1).reshape(n, k)


@pytest.mark.parametrize("method", ["fp8", "w8a8_fp8"])
def test_fp8_per_row_matches_sglang(nibble_bin, tmp_path, method):
    w = bf16_weights(1, 48, 160)
    got = run_online(nibble_bin, tmp_path, w, quantization=method)
    # SGLang: per_token_group_quant_fp8(W, group=K) in f32, eps 1e-10.
    x = w.float()
    scale = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-10) / 448.0
    q = (x / scale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    np.testing.assert_array_equal(got["codes"].reshape(48, 160), q.view(torch.uint8).numpy())
    np.testing.assert_array_equal(got["scales"].reshape(48), scale.reshape(48).numpy())


@pytest.mark.parametrize("config", ["int8wo", "int8dq"])
def test_torchao_int8_matches_bf16_torch(nibble_bin, tmp_path, config):
    w = bf16_weights(2, 32, 128)
    got = run_online(nibble_bin, tmp_path, w, torchao=config)
    # torchao choose_qparams_affine(SYMMETRIC, block (1, K), int8, eps=f32 eps) on bf16, then
    # quantize_affine: round(w * (1.0 / scale)) + 0, clamped. Every op stays in bf16.
    min_neg = torch.min(w.amin(dim=1), torch.zeros(32, dtype=torch.bfloat16))
    max_pos = torch.max(w.amax(dim=1), torch.zeros(32, dtype=torch.bfloat16))
    scale = torch.max(-min_neg, max_pos) / (float(127 - (-128)) / 2)
    scale = torch.clamp(scale, min=torch.finfo(torch.float32).eps)
    q = torch.clamp(torch.round(w * (1.0 / scale[:, None])), -128, 127).to(torch.int8)
    np.testing.assert_array_equal(got["codes"].view(np.int8).reshape(32, 128), q.numpy())
    np.testing.assert_array_equal(got["scales"].reshape(32), scale.float().numpy())
    assert got["info"]["scale_dtype"] == "bf16"


@pytest.mark.parametrize("group", [32, 64, 128, 256])
def test_torchao_int4_matches_tinygemm_quantization(nibble_bin, tmp_path, group):
    n, k = 16, 512
    w = bf16_weights(3 + group, n, k)
    got = run_online(nibble_bin, tmp_path, w, torchao=f"int4wo-{group}")
    # torchao int4_weight_only (TensorCoreTiledLayout): ASYMMETRIC, quant range [0, 15],
    # eps 1e-6, preserve_zero=False, ZeroPointDomain.FLOAT, bf16 scales and zeros.
    wg = w.reshape(n, k // group, group)
    lo, hi = wg.amin(dim=-1), wg.amax(dim=-1)
    scale = torch.clamp((hi - lo) / float(15 - 0), min=1e-6)
    zero = (lo + scale * 8.0).to(torch.bfloat16)
    group_min = zero - scale * 8.0
    q = torch.clamp(torch.round((wg - group_min[..., None]) / scale[..., None]), 0, 15)
    np.testing.assert_array_equal(unpack_nibbles(got["codes"], n, k),
                                  q.reshape(n, k).to(torch.uint8).numpy())
    np.testing.assert_array_equal(got["scales"], scale.float().numpy())
    np.testing.assert_array_equal(got["float_zeros"] + 8.0 * got["scales"], zero.float().numpy())
    # tinygemm's dequantization, (q − 8)·scale + zero, in f32.
    deq = ((q - 8.0).float() * scale.float()[..., None] + zero.float()[..., None]).reshape(n, k)
    np.testing.assert_allclose(got["dequant"], deq.numpy(), rtol=0, atol=1e-7)


@pytest.mark.parametrize("config", ["fp8wo", "fp8dq-per_row", "fp8dq-per_tensor"])
def test_torchao_fp8_matches_bf16_torch(nibble_bin, tmp_path, config):
    w = bf16_weights(4, 24, 96)
    got = run_online(nibble_bin, tmp_path, w, torchao=config)
    # torchao _choose_scale_float8: amax / finfo(e4m3).max in the weight dtype, kept as f32;
    # quantize: f32(w) / scale, clamped, cast.
    if config == "fp8dq-per_tensor":
        scale = (w.abs().max() / 448.0).float().reshape(1, 1)
    else:
        scale = (w.abs().amax(dim=1, keepdim=True) / 448.0).float()
    q = (w.float() / scale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    np.testing.assert_array_equal(got["codes"].reshape(24, 96), q.view(torch.uint8).numpy())
    np.testing.assert_array_equal(got["scales"].reshape(-1), scale.reshape(-1).numpy())


def bnb_dynamic_map():
    # bitsandbytes create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8).
    data = []
    for i in range(7):
        bounds = torch.linspace(0.1, 1, 2 ** i + 1)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        data += ((10 ** (-6 + i)) * means).tolist()
        data += (-(10 ** (-6 + i)) * means).tolist()
    data += [0, 1.0]
    data.sort()
    return torch.tensor(data)


def test_bitsandbytes_nf4_matches_quantize_4bit(nibble_bin, tmp_path):
    n, k = 64, 256  # 256 blocks of 64: one nested block
    w = bf16_weights(5, n, k)
    got = run_online(nibble_bin, tmp_path, w, quantization="bitsandbytes")
    assert got["info"]["elem"] == "nf4"
    blocks = w.float().reshape(-1, 64)
    absmax = blocks.abs().amax(dim=1)
    codes = torch.argmin((blocks / absmax[:, None]).reshape(-1, 1).sub(NF4).abs(), dim=-1)
    np.testing.assert_array_equal(unpack_nibbles(got["codes"], n, k).reshape(-1), codes.numpy())
    # compress_statistics=True: absmax − mean as 8-bit dynamic codes per 256 blocks.
    offset = absmax.mean()
    centred = absmax - offset
    outer = centred.abs().max()
    code = bnb_dynamic_map()
    q = torch.argmin((centred / outer).reshape(-1, 1).sub(code).abs(), dim=-1)
    scales = code[q] * outer + offset
    np.testing.assert_allclose(got["scales"].reshape(-1), scales.numpy(), rtol=2e-6, atol=1e-8)
    # The dynamic code's widest gap near ±1 is 0.9/64: absmax within 0.0071·max|absmax − mean|.
    assert np.abs(got["scales"].reshape(-1) - absmax.numpy()).max() <= 0.0071 * float(outer)


@pytest.mark.parametrize("method,qtype", [("q4_0", "Q4_0"), ("q8_0", "Q8_0")])
def test_gguf_blocks_match_gguf_py(nibble_bin, tmp_path, method, qtype):
    w = bf16_weights(6, 8, 512).float().numpy()
    got = run_online(nibble_bin, tmp_path, torch.from_numpy(w), quantization=method)
    t = gguf.GGMLQuantizationType[qtype]
    expected = gguf.quants.quantize(w, t)
    np.testing.assert_array_equal(got["codes"].reshape(expected.shape), expected)
    np.testing.assert_array_equal(got["dequant"], gguf.quants.dequantize(expected, t))


def test_q4_k_decodes_with_gguf_py_and_beats_q4_1(nibble_bin, tmp_path):
    rng = np.random.default_rng(7)
    w = rng.normal(0.0, 1.0, (32, 1024)).astype(np.float32)
    got = run_online(nibble_bin, tmp_path, torch.from_numpy(w), quantization="q4_k")
    blocks = got["codes"].reshape(32, -1)
    assert blocks.shape[1] == 1024 // 256 * 144
    deq = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q4_K)
    np.testing.assert_array_equal(got["dequant"], deq)
    rmse_k = float(np.sqrt(np.mean((deq - w) ** 2)))
    q41 = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q4_1)
    d41 = gguf.quants.dequantize(q41, gguf.GGMLQuantizationType.Q4_1)
    rmse_1 = float(np.sqrt(np.mean((d41 - w) ** 2)))
    # Unit Gaussian: Q4_K (4.5 bits) measures ~0.072, below Q4_1's ~0.079 (5 bits).
    assert rmse_k < 0.075 and rmse_k < 0.95 * rmse_1, (rmse_k, rmse_1)


# --- bitsandbytes pre-quantized loader ---------------------------------------------------------

def bnb_serialize(w, quant_type, nested):
    """quantize_4bit(w, blocksize=64, quant_type, compress_statistics=nested) and
    QuantState.as_dict(packed=True), re-implemented with numpy/torch. Returns (tensors, dense)."""
    n, k = w.shape
    if quant_type == "nf4":
        table = NF4.numpy()
    else:
        table = np.array([0, 0.0625, 8, 12, 4, 6, 2, 3, -0.0, -0.0625, -8, -12, -4, -6, -2, -3],
                         dtype=np.float32)
        table = table / np.float32(12.0)
    blocks = w.reshape(-1, 64).astype(np.float32)
    absmax = np.abs(blocks).max(axis=1).astype(np.float32)
    codes = np.argmin(np.abs((blocks / absmax[:, None]).reshape(-1, 1) - table), axis=1)
    packed = ((codes[0::2] << 4) | codes[1::2]).astype(np.uint8).reshape(-1, 1)
    out = {"weight": torch.from_numpy(packed),
           "weight.quant_map": torch.from_numpy(table.astype(np.float32))}
    state = {"quant_type": quant_type, "blocksize": 64, "dtype": "bfloat16", "shape": [n, k]}
    if nested:
        offset = np.float32(absmax.mean())
        centred = absmax - offset
        code = bnb_dynamic_map().numpy()
        outer = np.array([np.abs(centred[i:i + 256]).max() for i in range(0, len(centred), 256)],
                         dtype=np.float32)
        norm = centred / np.repeat(outer, 256)[:len(centred)]
        q = np.argmin(np.abs(norm.reshape(-1, 1) - code), axis=1).astype(np.uint8)
        out["weight.absmax"] = torch.from_numpy(q)
        out["weight.nested_absmax"] = torch.from_numpy(outer)
        out["weight.nested_quant_map"] = torch.from_numpy(code.astype(np.float32))
        state.update({"nested_blocksize": 256, "nested_dtype": "float32",
                      "nested_offset": float(offset)})
        # bitsandbytes' dequantize_4bit: code[q]·outer (f32), then += offset (f32).
        scale = (code[q] * np.repeat(outer, 256)[:len(q)]).astype(np.float32) + offset
    else:
        out["weight.absmax"] = torch.from_numpy(absmax)
        scale = absmax
    blob = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8).copy()
    out[f"weight.quant_state.bitsandbytes__{quant_type}"] = torch.from_numpy(blob)
    dense = (table[codes].reshape(-1, 64) * scale[:, None]).reshape(n, k)
    return out, dense


@pytest.mark.parametrize("quant_type,nested", [("nf4", True), ("nf4", False), ("fp4", True)])
def test_bitsandbytes_checkpoint_loads_as_bitsandbytes_decodes(nibble_bin, tmp_path, quant_type,
                                                               nested):
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                                   tie_word_embeddings=False)
    torch.manual_seed(8)
    model = transformers.LlamaForCausalLM(cfg).eval()
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    expected = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and name != "lm_head":
            tensors, dense = bnb_serialize(m.weight.detach().float().numpy(), quant_type, nested)
            del sd[name + ".weight"]
            sd.update({f"{name}.{k}": v for k, v in tensors.items()})
            expected[name] = dense
    path = tmp_path / "bnb"
    path.mkdir()
    safetensors_torch.save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    cfg.save_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
        "_load_in_4bit": True, "_load_in_8bit": False, "bnb_4bit_quant_type": quant_type,
        "bnb_4bit_use_double_quant": nested, "bnb_4bit_compute_dtype": "bfloat16",
        "bnb_4bit_quant_storage": "uint8", "llm_int8_skip_modules": None}
    (path / "config.json").write_text(json.dumps(config))
    out = tmp_path / "deq"
    subprocess.run([str(nibble_bin), "quant", "dequant", str(path), str(out)], check=True,
                   capture_output=True)
    got = {p.name[:-len(".weight.npy")]: np.load(p) for p in out.glob("*.weight.npy")}
    assert set(got) == set(expected)
    for name, dense in expected.items():
        if quant_type == "nf4":  # NF4: the same f32 products, bit for bit
            np.testing.assert_array_equal(got[name], dense, err_msg=name)
        else:  # FP4 runs as 12·table codes with scale absmax/12: within two f32 roundings
            np.testing.assert_allclose(got[name], dense, rtol=3e-7, atol=0, err_msg=name)
    info = subprocess.run([str(nibble_bin), "quant", "info", str(path)], check=True,
                          capture_output=True, text=True)
    layers = json.loads(info.stdout)["layers"]
    assert {l["elem"] for l in layers} == {"nf4" if quant_type == "nf4" else "fp8_e4m3"}
