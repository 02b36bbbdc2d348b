"""The user-facing commands: generate, chat, inspect, convert, synth, and their errors."""
import json
import subprocess

import numpy as np
import pytest


def run(nibble_bin, *args, input=None, check=True):
    return subprocess.run([str(nibble_bin), *map(str, args)], input=input, capture_output=True,
                          text=True, check=check, timeout=300)


def test_generate_greedy_is_deterministic_and_streams_plain_prompt(nibble_bin, default_gguf):
    a = run(nibble_bin, "generate", "-m", default_gguf, "--prompt", "The capital of France is",
            "--temperature", "0", "-n", "8").stdout
    b = run(nibble_bin, "generate", "-m", default_gguf, "--prompt", "The capital of France is",
            "--temperature", "0", "-n", "8").stdout
    assert a == b
    assert a.startswith("The capital of France is Paris")


def test_generate_seed_reproduces_sampling(nibble_bin, default_gguf):
    args = ["generate", "-m", default_gguf, "--prompt", "Once upon a time", "--temperature", "0.9",
            "--top-p", "0.95", "-n", "16"]
    a = run(nibble_bin, *args, "--seed", "7").stdout
    b = run(nibble_bin, *args, "--seed", "7").stdout
    assert a == b


def test_generate_stop_string_is_not_in_output(nibble_bin, default_gguf):
    out = run(nibble_bin, "generate", "-m", default_gguf, "--prompt", "The capital of France is",
              "--temperature", "0", "-n", "20", "--stop", "answer").stdout
    assert "answer" not in out
    assert out.startswith("The capital of France is Paris")


def test_chat_answers_through_the_template(nibble_bin, default_gguf):
    out = run(nibble_bin, "chat", "-m", default_gguf, "--temperature", "0", "-n", "24",
              input="What is the capital of France?\n/exit\n").stdout
    assert "Paris" in out


def test_generate_chat_stops_at_end_of_turn(nibble_bin, default_gguf):
    res = run(nibble_bin, "generate", "-m", default_gguf, "--chat", "--prompt", "Say hello.",
              "--temperature", "0", "-n", "200", "--stats")
    assert "<|im_end|>" not in res.stdout
    assert "finish: stop" in res.stderr


def test_inspect_describes_the_default_model(nibble_bin, default_gguf):
    info = json.loads(run(nibble_bin, "inspect", default_gguf, "--json").stdout)
    assert info["config"]["num_hidden_layers"] == 30
    assert info["tensor_types"]["Q4_1"]["count"] == 210
    assert info["tokenizer"]["vocab_size"] == 49152
    assert info["chat_template"] is True


def test_synth_writes_a_runnable_random_model(nibble_bin, tmp_path):
    out = tmp_path / "synth"
    config = {"model_type": "qwen3", "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "head_dim": 16, "vocab_size": 256, "max_position_embeddings": 128}
    (tmp_path / "config.json").write_text(json.dumps(config))
    run(nibble_bin, "synth", "--config", tmp_path / "config.json", "--out", out)
    info = json.loads(run(nibble_bin, "inspect", out, "--json", "--tensors").stdout)
    names = {t["name"] for t in info["tensors"]}
    assert "model.layers.1.self_attn.q_norm.weight" in names
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([[1, 2, 3, 4]]))
    run(nibble_bin, "logits", "-m", out, "--prompts", prompts, "--out", tmp_path / "logits")
    logits = np.load(tmp_path / "logits" / "logits_0.npy")
    assert logits.shape == (4, 256) and np.isfinite(logits).all()
    # Refuses to overwrite without --force; an unknown name lists the known ones.
    assert run(nibble_bin, "synth", "--config", "llama-3-8b", "--out", out, check=False).returncode == 1
    bad = run(nibble_bin, "synth", "--config", "no-such-model", "--out", tmp_path / "x", check=False)
    assert bad.returncode == 1 and "llama-3-8b" in bad.stderr


def test_convert_gguf_to_gguf_requantizes(nibble_bin, default_gguf, tmp_path):
    gguf = pytest.importorskip("gguf")
    out = tmp_path / "q8.gguf"
    run(nibble_bin, "convert", default_gguf, "--out", out, "--dtype", "Q8_0")
    reader = gguf.GGUFReader(out)
    types = {t.tensor_type.name for t in reader.tensors}
    assert types == {"Q8_0", "F32"}
    text = run(nibble_bin, "generate", "-m", out, "--prompt", "The capital of France is",
               "--temperature", "0", "-n", "4").stdout
    assert "Paris" in text


def test_convert_hf_bf16_loads_in_transformers(nibble_bin, default_gguf, tmp_path):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "hf"
    run(nibble_bin, "convert", default_gguf, "--out", out, "--dtype", "bfloat16")
    cfg = transformers.AutoConfig.from_pretrained(out)
    assert cfg.num_hidden_layers == 30
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok("Hello world").input_ids == json.loads(
        run(nibble_bin, "tokenize", "--model-path", out, "--text", "Hello world").stdout)
    assert run(nibble_bin, "convert", default_gguf, "--out", out, check=False).returncode == 1


@pytest.mark.parametrize("args, message", [
    (["generate", "-m", "/nonexistent/model.gguf", "--prompt", "x"], "/nonexistent/model.gguf"),
    (["generate", "--prompt", "x", "--top-p", "0"], "top_p"),
    (["generate", "--prompt", "x", "--dtype", "int3"], "--dtype"),
    (["generate", "--prompt", "x", "-n", "100000"], "context length"),
    (["inspect", "/etc/hostname"], "/etc/hostname"),
])
def test_bad_input_gives_a_clear_error(nibble_bin, args, message):
    res = run(nibble_bin, *args, check=False)
    assert res.returncode == 1, res
    assert message in res.stderr
    assert res.stderr.startswith("error:")


def test_convert_hf_directory_to_gguf_matches_direct_conversion(nibble_bin, default_gguf, tmp_path):
    gguf = pytest.importorskip("gguf")
    hf = tmp_path / "hf"
    run(nibble_bin, "convert", default_gguf, "--out", hf, "--dtype", "float32")
    via_hf = tmp_path / "via_hf.gguf"
    direct = tmp_path / "direct.gguf"
    run(nibble_bin, "convert", hf, "--out", via_hf, "--dtype", "Q8_0")
    run(nibble_bin, "convert", default_gguf, "--out", direct, "--dtype", "Q8_0")
    a, b = gguf.GGUFReader(via_hf), gguf.GGUFReader(direct)
    tensors_b = {t.name: t for t in b.tensors}
    for t in a.tensors:
        assert np.array_equal(t.data, tensors_b[t.name].data), t.name
    pre = a.fields["tokenizer.ggml.pre"].contents()
    assert pre == "gpt-2"
    ids = json.loads(run(nibble_bin, "tokenize", "--model-path", via_hf, "--text", "Hello world 123").stdout)
    assert ids == json.loads(run(nibble_bin, "tokenize", "--model-path", direct, "--text", "Hello world 123").stdout)
