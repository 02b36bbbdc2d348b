"""safetensors and config.json interoperability: nibble against the `safetensors` and
`transformers` packages, driven through the `nibble safetensors` developer subcommand."""
import json
import pathlib
import subprocess

import numpy as np
import pytest

safetensors_numpy = pytest.importorskip("safetensors.numpy")
torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

NUMPY_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
TORCH_DTYPES = {
    "BF16": torch.bfloat16, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "F32": torch.float32, "F16": torch.float16, "I64": torch.int64, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
SHAPES = [(3, 5), (17,), (2, 3, 4), (), (0, 4)]


def run_nibble(nibble_bin, *args, check=True):
    result = subprocess.run([str(nibble_bin), "safetensors", *map(str, args)],
                            capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def random_numpy(dtype, shape, rng):
    # np.asarray: a shape of () would otherwise give a numpy scalar, not an array.
    if dtype == np.bool_:
        return np.asarray(rng.integers(0, 2, size=shape).astype(np.bool_))
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.asarray(rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True))
    return np.asarray((rng.standard_normal(size=shape) * 10).astype(dtype))


def random_torch(dtype, shape, gen):
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    if not dtype.is_floating_point:
        info = torch.iinfo(dtype)
        return torch.randint(info.min, info.max, shape, generator=gen, dtype=torch.int64).to(dtype)
    # fp8 has no random generator of its own: draw in f32 and round.
    return (torch.randn(shape, generator=gen) * 4).to(dtype)


def raw_bytes(value):
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value).tobytes()
    return value.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def check_listing(nibble_bin, path, expected, metadata):
    listing = json.loads(run_nibble(nibble_bin, "check", path).stdout)
    assert listing["metadata"] == metadata
    got = {t["name"]: t for t in listing["tensors"]}
    assert set(got) == set(expected)
    for name, (dtype_name, value) in expected.items():
        assert got[name]["dtype"] == dtype_name
        assert tuple(got[name]["shape"]) == tuple(value.shape)


def check_read_and_rewrite(nibble_bin, tmp_path, path, expected, loader, metadata):
    # Read: every tensor's bytes as nibble sees them equal what the package wrote.
    for i, (name, (_, value)) in enumerate(expected.items()):
        out = tmp_path / f"dump{i}.bin"
        run_nibble(nibble_bin, "dump", path, name, out)
        assert out.read_bytes() == raw_bytes(value), name
    # Write: nibble's rewrite loads in the package bit-exactly, metadata kept.
    copy = tmp_path / "copy.safetensors"
    run_nibble(nibble_bin, "copy", path, copy)
    loaded = loader(str(copy))
    assert set(loaded) == set(expected)
    for name, (_, value) in expected.items():
        assert tuple(loaded[name].shape) == tuple(value.shape)
        assert loaded[name].dtype == value.dtype
        assert raw_bytes(loaded[name]) == raw_bytes(value), name
    from safetensors import safe_open
    with safe_open(str(copy), framework="numpy") as f:
        assert f.metadata() == {**metadata, "format": "pt"}
    # The header is padded to a multiple of 8 and the rewrite is itself valid for nibble.
    header_len = int.from_bytes(copy.read_bytes()[:8], "little")
    assert header_len % 8 == 0
    check_listing(nibble_bin, copy, expected, {**metadata, "format": "pt"})


def test_numpy_written_files_round_trip(nibble_bin, tmp_path):
    rng = np.random.default_rng()
    expected = {}
    for dtype_name, dtype in NUMPY_DTYPES.items():
        for i, shape in enumerate(SHAPES):
            expected[f"model.{dtype_name.lower()}.{i}"] = (dtype_name, random_numpy(dtype, shape, rng))
    path = tmp_path / "numpy.safetensors"
    metadata = {"format": "np", "note": "written by safetensors.numpy"}
    safetensors_numpy.save_file({k: v for k, (_, v) in expected.items()}, str(path),
                                metadata=metadata)
    check_listing(nibble_bin, path, expected, metadata)
    check_read_and_rewrite(nibble_bin, tmp_path, path, expected, safetensors_numpy.load_file,
                           {"note": "written by safetensors.numpy"} | {"format": "np"})


def test_torch_written_files_with_bf16_and_fp8_round_trip(nibble_bin, tmp_path):
    gen = torch.Generator().manual_seed(int(np.random.default_rng().integers(1 << 62)))
    expected = {}
    for dtype_name, dtype in TORCH_DTYPES.items():
        for i, shape in enumerate(SHAPES):
            expected[f"layers.{i}.{dtype_name.lower()}"] = (dtype_name, random_torch(dtype, shape, gen))
    path = tmp_path / "torch.safetensors"
    safetensors_torch.save_file({k: v for k, (_, v) in expected.items()}, str(path),
                                metadata={"format": "pt"})
    check_listing(nibble_bin, path, expected, {"format": "pt"})
    check_read_and_rewrite(nibble_bin, tmp_path, path, expected, safetensors_torch.load_file,
                           {"format": "pt"})


def test_corrupt_file_is_rejected_with_file_name(nibble_bin, tmp_path):
    path = tmp_path / "weights.safetensors"
    safetensors_numpy.save_file({"w": np.arange(64, dtype=np.float32)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    result = run_nibble(nibble_bin, "check", path, check=False)
    assert result.returncode == 1
    assert str(path) in result.stderr and "'w'" in result.stderr and "truncated" in result.stderr
    path.write_bytes(data + b"\0" * 3)
    result = run_nibble(nibble_bin, "check", path, check=False)
    assert result.returncode == 1 and "trailing" in result.stderr


CONFIGS = {
    "llama31": {
        "model_type": "llama", "vocab_size": 1024, "hidden_size": 128, "intermediate_size": 256,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 512, "rope_type": "llama3"},
        "bos_token_id": 1, "eos_token_id": [2, 3], "tie_word_embeddings": True,
    },
    "qwen2": {
        "model_type": "qwen2", "vocab_size": 1024, "hidden_size": 128, "intermediate_size": 256,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rope_theta": 1000000.0, "eos_token_id": 5, "bos_token_id": 4,
    },
    "qwen3": {
        "model_type": "qwen3", "vocab_size": 1024, "hidden_size": 128, "intermediate_size": 256,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 64, "rope_theta": 1000000.0, "tie_word_embeddings": True,
    },
    "mistral": {
        "model_type": "mistral", "vocab_size": 1024, "hidden_size": 128,
        "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 1, "sliding_window": None,
    },
}


def rope_of(config):
    params = getattr(config, "rope_parameters", None)
    if params:  # transformers 5
        return params.get("rope_theta"), params.get("rope_type", "default"), params.get("factor")
    scaling = getattr(config, "rope_scaling", None) or {}
    return (config.rope_theta, scaling.get("rope_type", scaling.get("type", "default")),
            scaling.get("factor"))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_written_by_nibble_loads_in_transformers(nibble_bin, tmp_path, name):
    transformers = pytest.importorskip("transformers")
    source = tmp_path / "source"
    source.mkdir()
    (source / "config.json").write_text(json.dumps(CONFIGS[name]))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    run_nibble(nibble_bin, "config", source, out_dir / "config.json")
    original = transformers.AutoConfig.from_pretrained(str(source))
    written = transformers.AutoConfig.from_pretrained(str(out_dir))
    assert type(written) is type(original)
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                "rms_norm_eps", "tie_word_embeddings", "bos_token_id", "eos_token_id"):
        assert getattr(written, key) == getattr(original, key), key
    def head_dim(c):  # qwen2 reads head_dim when present, else hidden / heads
        return getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    assert head_dim(written) == head_dim(original)
    assert getattr(written, "attention_bias", None) == getattr(original, "attention_bias", None)
    assert rope_of(written) == rope_of(original)
    assert getattr(written, "sliding_window", None) is None


def test_sharded_transformers_checkpoint_loads(nibble_bin, tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(str(tmp_path), max_shard_size="40KB", safe_serialization=True)
    assert (tmp_path / "model.safetensors.index.json").exists()
    listing = json.loads(run_nibble(nibble_bin, "check", tmp_path).stdout)
    state = model.state_dict()
    got = {t["name"]: t for t in listing["tensors"]}
    assert set(got) == set(state)
    for name, value in state.items():
        assert got[name]["dtype"] == "BF16"
        assert tuple(got[name]["shape"]) == tuple(value.shape)
    # A shard removed from under the index is reported with its name.
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (tmp_path / shard).unlink()
    result = run_nibble(nibble_bin, "check", tmp_path, check=False)
    assert result.returncode == 1 and shard in result.stderr
