"""GGUF parity with the `gguf` Python package: nibble's dequantization must equal
gguf.quants.dequantize bit for bit, nibble's quantizers must equal gguf.quants.quantize
byte for byte, and files written by nibble must read back with GGUFReader."""
import json
import subprocess

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

QUANTIZABLE = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
K_QUANTS = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
# Byte offsets of the f16 scale fields inside one block, which must stay finite.
F16_SCALE_OFFSETS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
PLAIN_NUMPY = {T.I8: np.int8, T.I16: np.int16, T.I32: np.int32, T.I64: np.int64, T.F64: np.float64}


def run(nibble_bin, *args, check=True):
    proc = subprocess.run([str(nibble_bin), *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"nibble {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc


def random_blocks(rng, qtype, rows, cols):
    """Random raw blocks of a block type, with finite random f16 scales."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = rows * cols // block_size
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for offset in F16_SCALE_OFFSETS[qtype]:
        scales = rng.uniform(-2.0, 2.0, size=n_blocks).astype(np.float16)
        blocks[:, offset:offset + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return blocks.reshape(rows, cols // block_size * type_size)


def assert_bits_equal(actual, expected, what):
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == np.float32 and expected.dtype == np.float32
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    assert np.array_equal(nan_a, nan_e), f"{what}: NaN positions differ"
    a, e = actual.view(np.uint32)[~nan_a], expected.view(np.uint32)[~nan_e]
    bad = np.flatnonzero(a != e)
    assert bad.size == 0, (f"{what}: {bad.size} values differ, first at {bad[0]}: "
                           f"{actual[~nan_a][bad[0]]} != {expected[~nan_e][bad[0]]}")


def reference_dequant(tensor):
    if tensor.tensor_type in PLAIN_NUMPY:
        return np.asarray(tensor.data).astype(np.float32)
    return gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)


def check_file_dequantizes_bit_identically(nibble_bin, path, outdir):
    run(nibble_bin, "gguf", "dequant", path, outdir)
    reader = gguf.GGUFReader(path)
    assert len(reader.tensors) > 0
    for tensor in reader.tensors:
        expected = reference_dequant(tensor)
        actual = np.load(outdir / f"{tensor.name}.npy")
        assert actual.shape == tuple(int(d) for d in reversed(tensor.shape)), tensor.name
        assert_bits_equal(actual, expected.reshape(actual.shape), f"{tensor.name} ({tensor.tensor_type.name})")


@pytest.fixture
def every_type_gguf(tmp_path):
    rng = np.random.default_rng()
    path = tmp_path / "types.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    rows, cols = 6, 512
    for qtype in QUANTIZABLE:
        data = rng.normal(0.0, 1.5, size=(rows, cols)).astype(np.float32)
        quantized = gguf.quants.quantize(data, qtype)
        raw_dtype = None if qtype in (T.F32, T.F16) else qtype
        writer.add_tensor(f"quantized.{qtype.name}", quantized, raw_dtype=raw_dtype)
    for qtype in K_QUANTS + [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]:
        writer.add_tensor(f"raw.{qtype.name}", random_blocks(rng, qtype, rows, cols), raw_dtype=qtype)
    # Every f16 and bf16 bit pattern, NaNs and infinities included.
    all16 = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    writer.add_tensor("raw.F16", all16.view(np.float16).reshape(256, 256))
    writer.add_tensor("raw.BF16", all16.view(np.uint8).reshape(256, 512), raw_dtype=T.BF16)
    for qtype, dtype in PLAIN_NUMPY.items():
        if dtype == np.float64:
            values = rng.normal(0.0, 1e3, size=(3, 40))
        else:
            info = np.iinfo(dtype)
            values = rng.integers(info.min, info.max, size=(3, 40), dtype=dtype, endpoint=True)
        writer.add_tensor(f"plain.{qtype.name}", values.astype(dtype))
    writer.add_tensor("vector.F32", rng.normal(size=17).astype(np.float32))
    writer.add_tensor("cube.Q8_0", gguf.quants.quantize(
        rng.normal(size=(2, 3, 64)).astype(np.float32), T.Q8_0), raw_dtype=T.Q8_0)
    writer.add_string("test.string", "héllo")
    writer.add_array("test.strings", ["a", "", "c d", "ünï"])
    writer.add_array("test.ints", [1, -2, 3])
    writer.add_array("test.floats", [0.5, -1.25])
    writer.add_array("test.bools", [True, False])
    writer.add_uint8("test.u8", 255)
    writer.add_int8("test.i8", -128)
    writer.add_uint16("test.u16", 65535)
    writer.add_int16("test.i16", -32768)
    writer.add_uint32("test.u32", 4294967295)
    writer.add_int32("test.i32", -2147483648)
    writer.add_uint64("test.u64", 18446744073709551615)
    writer.add_int64("test.i64", -9223372036854775808)
    writer.add_float32("test.f32", 3.25)
    writer.add_float64("test.f64", -1e300)
    writer.add_bool("test.bool", True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_every_type_dequantizes_bit_identically(nibble_bin, every_type_gguf, tmp_path):
    check_file_dequantizes_bit_identically(nibble_bin, every_type_gguf, tmp_path / "out")


def test_default_model_dequantizes_bit_identically(nibble_bin, default_gguf, tmp_path):
    check_file_dequantizes_bit_identically(nibble_bin, default_gguf, tmp_path / "out")


def fields_of(path):
    reader = gguf.GGUFReader(path)
    fields = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        fields[name] = (field.types, field.contents())
    return reader, fields


def test_nibble_writer_output_reads_back_with_gguf_reader(nibble_bin, every_type_gguf, tmp_path):
    copy = tmp_path / "copy.gguf"
    run(nibble_bin, "gguf", "copy", every_type_gguf, copy)
    source, source_fields = fields_of(every_type_gguf)
    written, written_fields = fields_of(copy)
    assert list(written_fields) == list(source_fields)
    for key, (types, value) in source_fields.items():
        assert written_fields[key][0] == types, key
        assert written_fields[key][1] == value, key
    assert [t.name for t in written.tensors] == [t.name for t in source.tensors]
    for a, b in zip(source.tensors, written.tensors):
        assert a.tensor_type == b.tensor_type and list(a.shape) == list(b.shape), a.name
        assert np.asarray(a.data).tobytes() == np.asarray(b.data).tobytes(), a.name


@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.F16, T.BF16])
def test_quantize_matches_gguf_py(nibble_bin, tmp_path, qtype):
    rng = np.random.default_rng()
    source = tmp_path / "f32.gguf"
    writer = gguf.GGUFWriter(str(source), "llama")
    data = {
        "normal": rng.normal(0.0, 2.0, size=(16, 256)).astype(np.float32),
        "skewed": (rng.exponential(0.3, size=(8, 128)) + 0.1).astype(np.float32),
        "tiny": rng.normal(0.0, 1e-3, size=(4, 64)).astype(np.float32),
    }
    for name, values in data.items():
        writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    out = tmp_path / "q.gguf"
    run(nibble_bin, "gguf", "copy", source, out, "--quantize", qtype.name)
    reader = gguf.GGUFReader(out)
    for tensor in reader.tensors:
        assert tensor.tensor_type == qtype, tensor.name
        expected = gguf.quants.quantize(data[tensor.name], qtype)
        actual = np.asarray(tensor.data)
        assert actual.view(np.uint8).tobytes() == expected.view(np.uint8).tobytes(), tensor.name


def test_dump_lists_metadata_and_tensors(nibble_bin, default_gguf):
    dump = json.loads(run(nibble_bin, "gguf", "dump", default_gguf).stdout)
    reader = gguf.GGUFReader(default_gguf)
    assert dump["version"] == 3
    assert dump["metadata"]["general.architecture"]["value"] == "llama"
    tokens = dump["metadata"]["tokenizer.ggml.tokens"]
    assert tokens["count"] == 49152 and tokens["truncated"] and len(tokens["value"]) == 8
    assert len(dump["tensors"]) == len(reader.tensors)
    for entry, tensor in zip(dump["tensors"], reader.tensors):
        assert entry["name"] == tensor.name
        assert entry["type"] == tensor.tensor_type.name
        assert entry["shape"] == [int(d) for d in reversed(tensor.shape)]
        assert entry["nbytes"] == int(tensor.n_bytes)


def test_corrupt_file_is_a_clean_error(nibble_bin, default_gguf, tmp_path):
    data = default_gguf.read_bytes()[:5000]
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(data)
    proc = run(nibble_bin, "gguf", "dump", bad, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and str(bad) in proc.stderr
