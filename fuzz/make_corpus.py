#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

Seeds are small valid inputs made by the reference libraries (safetensors, gguf, tokenizers)
or written out by hand (configs, templates, request bodies), so that the fuzzers start from
the structure of real files instead of discovering it. Deterministic: rerunning rewrites the
same files. Usage: make_corpus.py [output dir] (default: fuzz/corpus beside this script).
"""
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

here = Path(__file__).resolve().parent
out_root = Path(sys.argv[1]) if len(sys.argv) > 1 else here / "corpus"
rng = np.random.default_rng(1234)


def write(target, name, data):
    d = out_root / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


def dumps(value):
    return json.dumps(value, ensure_ascii=False)


# ---- safetensors -------------------------------------------------------------------------
def safetensors_seeds():
    import torch
    from safetensors.torch import save

    def t(shape, dtype):
        return torch.from_numpy(rng.standard_normal(shape).astype(np.float32)).to(dtype)

    write("fuzz_safetensors", "f32_f16_bf16", save({
        "a": t((2, 3), torch.float32), "b": t((4,), torch.float16), "c": t((2, 2), torch.bfloat16)}))
    write("fuzz_safetensors", "fp8_int", save({
        "w": t((4, 4), torch.float8_e4m3fn), "s": t((4, 1), torch.float32),
        "q": torch.arange(8, dtype=torch.int32), "z": torch.zeros((0, 3), dtype=torch.int8),
        "m": torch.ones((3,), dtype=torch.bool)}, metadata={"format": "pt", "note": "seed"}))
    write("fuzz_safetensors", "scalar", save({"x": torch.tensor(1.5, dtype=torch.float64)}))
    write("fuzz_safetensors", "empty", save({}))


# ---- GGUF --------------------------------------------------------------------------------
def gguf_bytes(fill):
    import gguf
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "seed.gguf")
        w = gguf.GGUFWriter(path, "llama")
        fill(w, gguf)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return Path(path).read_bytes()


def add_quantized(w, gguf, name, shape, qtype):
    data = rng.standard_normal(shape).astype(np.float32)
    if qtype in (gguf.GGMLQuantizationType.F32,):
        w.add_tensor(name, data)
    elif qtype == gguf.GGMLQuantizationType.F16:
        w.add_tensor(name, data.astype(np.float16))
    elif qtype in (gguf.GGMLQuantizationType.Q2_K, gguf.GGMLQuantizationType.Q3_K,
                   gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q5_K,
                   gguf.GGMLQuantizationType.Q6_K):
        # gguf-py cannot quantize K-quants: random blocks of the right size serve as seeds.
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        q = rng.integers(0, 256, (shape[0], shape[1] // block * size), dtype=np.uint8)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)
    else:
        q = gguf.quants.quantize(data, qtype)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)


def tiny_llama(w, gguf, byte_level):
    hidden, ffn, heads, kv_heads, layers = 32, 64, 2, 1, 1
    if byte_level:
        tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
        tokens += ["Ġ", "Ġh", "he", "ll", "Ġhe", "llo"]
        merges = ["Ġ h", "h e", "l l", "Ġh e", "ll o"]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("smollm")
        w.add_token_merges(merges)
        types = [3, 3, 3] + [1] * (len(tokens) - 3)
    else:
        tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["▁", "▁h", "i", "h", "▁hi"]
        w.add_tokenizer_model("llama")
        w.add_token_scores([0.0] * 3 + [0.0] * 256 + [-1.0, -2.0, -3.0, -4.0, -5.0])
        types = [2, 3, 3] + [6] * 256 + [1] * 5
    vocab = len(tokens)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_bos_token_id(1 if not byte_level else 0)
    w.add_eos_token_id(2)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")
    w.add_block_count(layers)
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(vocab)
    Q8, F32 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.F32
    head_dim = hidden // heads
    add_quantized(w, gguf, "token_embd.weight", (vocab, hidden), Q8)
    add_quantized(w, gguf, "output_norm.weight", (hidden,), F32)
    add_quantized(w, gguf, "output.weight", (vocab, hidden), gguf.GGMLQuantizationType.F16)
    for i in range(layers):
        p = f"blk.{i}."
        add_quantized(w, gguf, p + "attn_q.weight", (heads * head_dim, hidden), Q8)
        add_quantized(w, gguf, p + "attn_k.weight", (kv_heads * head_dim, hidden), Q8)
        add_quantized(w, gguf, p + "attn_v.weight", (kv_heads * head_dim, hidden), Q8)
        add_quantized(w, gguf, p + "attn_output.weight", (hidden, heads * head_dim), Q8)
        add_quantized(w, gguf, p + "ffn_gate.weight", (ffn, hidden), Q8)
        add_quantized(w, gguf, p + "ffn_up.weight", (ffn, hidden), Q8)
        add_quantized(w, gguf, p + "ffn_down.weight", (hidden, ffn), Q8)
        add_quantized(w, gguf, p + "attn_norm.weight", (hidden,), F32)
        add_quantized(w, gguf, p + "ffn_norm.weight", (hidden,), F32)


def every_block_type(w, gguf):
    T = gguf.GGMLQuantizationType
    w.add_uint32("general.alignment", 64)
    w.add_array("test.strings", ["a", "bc", ""])
    w.add_array("test.ints", [1, -2, 3])
    w.add_array("test.floats", [0.5, -1.25])
    w.add_array("test.nested", [[1, 2], [3]])
    w.add_bool("test.flag", True)
    w.add_float64("test.f64", 2.5)
    w.add_int64("test.i64", -7)
    for qtype in (T.F32, T.F16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K,
                  T.Q4_K, T.Q5_K, T.Q6_K):
        add_quantized(w, gguf, f"t.{qtype.name}", (2, 256), qtype)


def gguf_seeds():
    write("fuzz_gguf", "tiny_llama_spm", gguf_bytes(lambda w, g: tiny_llama(w, g, False)))
    write("fuzz_gguf", "tiny_llama_bpe", gguf_bytes(lambda w, g: tiny_llama(w, g, True)))
    write("fuzz_gguf", "block_types", gguf_bytes(every_block_type))


# ---- config.json + quantization_config (+ NUL + generation_config / sidecar) -------------
def config_seeds():
    llama = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152,
             "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
             "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192,
             "rms_norm_eps": 1e-5, "rope_theta": 100000, "tie_word_embeddings": True,
             "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}
    llama3 = dict(llama, vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                  num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                  eos_token_id=[128001, 128008, 128009],
                  rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    qwen2 = dict(llama, model_type="qwen2", architectures=["Qwen2ForCausalLM"], num_attention_heads=14,
                 num_key_value_heads=2, hidden_size=896, intermediate_size=4864, use_sliding_window=False)
    qwen3 = dict(qwen2, model_type="qwen3", head_dim=128, attention_bias=False)
    mistral = dict(llama, model_type="mistral", sliding_window=None)
    gen = {"temperature": 0.6, "top_p": 0.9, "top_k": 20, "do_sample": True, "eos_token_id": [2, 3]}
    quant = {
        "gptq": {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": True, "sym": True,
                 "lm_head": False, "dynamic": {"-:.*down_proj.*": {}, "+:.*layers\\.1\\..*": {"bits": 8}}},
        "awq": {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm",
                "modules_to_not_convert": ["lm_head"]},
        "ct": {"quant_method": "compressed-tensors", "format": "pack-quantized",
               "config_groups": {"group_0": {"targets": ["Linear"], "format": "pack-quantized",
                   "weights": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group",
                               "group_size": 128, "dynamic": False},
                   "input_activations": None}},
               "ignore": ["lm_head", "re:.*mlp\\.gate_proj$"], "quantization_status": "compressed"},
        "ct_fp8": {"quant_method": "compressed-tensors", "format": "float-quantized",
                   "config_groups": {"g": {"targets": ["Linear"],
                       "weights": {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel"},
                       "input_activations": {"num_bits": 8, "type": "float", "symmetric": True,
                                             "strategy": "token", "dynamic": True}}},
                   "kv_cache_scheme": {"num_bits": 8, "type": "float"}, "ignore": ["lm_head"]},
        "fp8_block": {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128],
                      "ignored_layers": ["lm_head"]},
        "fbgemm": {"quant_method": "fbgemm_fp8", "modules_to_not_convert": ["lm_head"]},
        "modelopt": {"quant_method": "modelopt", "quant_algo": "FP8", "kv_cache_quant_algo": "FP8",
                     "exclude_modules": ["lm_head", "*.mlp.gate*"]},
        "modelopt_fp4": {"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16,
                         "exclude_modules": ["lm_head"]},
    }
    write("fuzz_hf_config", "llama", dumps(llama) + "\0" + dumps(gen))
    write("fuzz_hf_config", "llama3", dumps(llama3))
    write("fuzz_hf_config", "qwen2", dumps(qwen2))
    write("fuzz_hf_config", "qwen3", dumps(qwen3))
    write("fuzz_hf_config", "mistral", dumps(mistral) + "\0" + dumps({"bits": 4, "group_size": 128, "desc_act": False}))
    for name, q in quant.items():
        write("fuzz_hf_config", "quant_" + name, dumps(dict(llama, quantization_config=q)))
    write("fuzz_hf_config", "text_config", dumps({"model_type": "llama", "text_config": {"quantization_config": quant["fp8_block"]}}))
    write("fuzz_hf_config", "compression_config", dumps(dict(qwen2, compression_config=quant["ct"])))
    write("fuzz_hf_config", "sidecar_modelopt", dumps(llama) + "\0" + dumps({"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "FP8", "exclude_modules": ["lm_head"]}}))


# ---- tokenizer.json + NUL + text -----------------------------------------------------------
TEXTS = ["Hello world! It's 2024, naïve café — 你好 🙂\n\tend", "<|im_start|>user\nhi<|im_end|>",
         "   leading spaces and 12345 digits", "\xff\xfe bytes"]


def tokenizer_seeds():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers, AddedToken, Regex

    corpus = [t for t in TEXTS] * 3 + ["the quick brown fox jumps over the lazy dog"] * 5

    # GPT-2 / SmolLM style byte-level BPE.
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"]))
    write("fuzz_tokenizer", "byte_level_bpe", tok.to_str() + "\0" + TEXTS[0])

    # Llama 3 style: Split regex + ByteLevel, template post-processor with BOS.
    tok3 = Tokenizer(models.BPE())
    tok3.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok3.decoder = decoders.ByteLevel()
    tok3.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=290, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                         special_tokens=["<|begin_of_text|>", "<|eot_id|>"]))
    tok3.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", tok3.token_to_id("<|begin_of_text|>"))])
    write("fuzz_tokenizer", "split_regex_bpe", tok3.to_str() + "\0" + TEXTS[2])

    # SentencePiece style (Llama 2 / Mistral): Prepend + Replace normalizer, byte fallback.
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = 3 + b
    for piece in ["▁", "h", "i", "▁h", "▁hi", "e", "l", "o", "▁he", "ll", "▁hell", "▁hello"]:
        vocab[piece] = len(vocab)
    spm = Tokenizer(models.BPE(vocab=vocab, merges=[("▁", "h"), ("▁h", "i"), ("▁h", "e"), ("l", "l"), ("▁he", "ll"), ("▁hell", "o")],
                               byte_fallback=True, fuse_unk=True, unk_token="<unk>"))
    spm.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    spm.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    spm.add_special_tokens([AddedToken("<s>", special=True, normalized=False), AddedToken("</s>", special=True, normalized=False)])
    spm.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    write("fuzz_tokenizer", "sentencepiece_bpe", spm.to_str() + "\0" + TEXTS[0])

    # Normalizers and other pre-tokenizers.
    misc = Tokenizer(models.BPE(unk_token="[UNK]"))
    misc.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(), normalizers.Strip()])
    misc.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.Punctuation()])
    misc.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=120, special_tokens=["[UNK]", "[CLS]", "[SEP]"]))
    misc.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    misc.add_tokens([AddedToken("<tool>", single_word=True, lstrip=True, rstrip=True)])
    write("fuzz_tokenizer", "normalizers_whitespace", misc.to_str() + "\0" + TEXTS[1] + " <tool> X")

    meta = Tokenizer(models.BPE(vocab={"▁": 0, "a": 1, "b": 2, "▁a": 3}, merges=[("▁", "a")]))
    meta.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    meta.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    write("fuzz_tokenizer", "metaspace", meta.to_str() + "\0" + "a b ab ba")


# ---- chat templates + NUL + context ---------------------------------------------------------
def chat_template_seeds():
    chatml = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
              "{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
              "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
              "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    llama3 = ("{{- bos_token }}{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}"
              "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = \"\" %}{%- endif %}"
              "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- \"Today Date: \" + strftime_now(\"%d %b %Y\") + \"\\n\\n\" }}"
              "{{- system_message }}{{- \"<|eot_id|>\" }}{%- for message in messages %}"
              "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}"
              "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")
    mistral = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
               "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
               "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
               "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}")
    features = ("{% macro render(m, depth=0) %}{{ m.role | upper }}:{{ m.content | replace('a', 'b') }}{% endmacro %}"
                "{% set ns = namespace(count=0) %}{% for m in messages if m.role != 'system' %}{% set ns.count = ns.count + 1 %}"
                "{{ render(m) }}{{ loop.index }}/{{ loop.length }}{% if not loop.last %}, {% endif %}{% endfor %}"
                "{{ ns.count }} {{ messages | length }} {{ (messages | map(attribute='role') | list) | tojson }}"
                "{{ {'a': [1, 2.5, none, true]} | tojson(indent=2) }}{{ 'x' * 3 }}{{ range(3) | join('-') }}"
                "{{ messages[-1]['content'][:5] }}{{ 'abc'.startswith('a') }}{{ dict(k=1).items() | list }}"
                "{%- raw %}{{ not rendered }}{% endraw -%}{# comment #}{{ 7 // 2 }} {{ 2 ** 10 }} {{ 'A' in 'ABC' }}")
    context = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Why?"}],
               "add_generation_prompt": True, "bos_token": "<s>", "eos_token": "</s>"}
    alternating = dict(context, messages=context["messages"][1:])
    write("fuzz_chat_template", "chatml", chatml + "\0" + dumps(context))
    write("fuzz_chat_template", "llama3", llama3 + "\0" + dumps(context))
    write("fuzz_chat_template", "mistral", mistral + "\0" + dumps(alternating))
    write("fuzz_chat_template", "features", features + "\0" + dumps(context))
    write("fuzz_chat_template", "tools", "{% if tools %}{% for t in tools %}{{ t | tojson }}{% endfor %}{% endif %}"
          "{% for m in messages %}{{ m['content'] }}{% endfor %}\0" + dumps(dict(context, tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])))


# ---- HTTP request bodies: one route byte (0 completions, 1 chat, 2 generate) + body ----------
def http_seeds():
    seeds = {
        "completion_text": (0, {"model": "fuzz-model", "prompt": "hi there", "max_tokens": 8, "temperature": 0.7,
                                "top_p": 0.9, "top_k": 5, "stop": ["\n", "hi"], "seed": 3, "logprobs": 2}),
        "completion_ids": (0, {"prompt": [[1, 2, 3], [5, 6]], "n": 2, "stream": True,
                               "stream_options": {"include_usage": True}, "echo": False}),
        "completion_list": (0, {"prompt": ["a", "b"], "max_completion_tokens": 4, "presence_penalty": 1.5,
                                "frequency_penalty": -0.5, "repetition_penalty": 1.1, "stop_token_ids": [2]}),
        "chat": (1, {"model": "default", "messages": [{"role": "system", "content": "be nice"},
                                                        {"role": "user", "content": "hi"}],
                     "max_tokens": 16, "logprobs": True, "top_logprobs": 3, "response_format": {"type": "text"}}),
        "chat_parts": (1, {"messages": [{"role": "developer", "content": [{"type": "text", "text": "x"}]},
                                        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "!"}]},
                                        {"role": "assistant"}], "stream": True, "tool_choice": "none", "min_p": 0.1}),
        "generate_text": (2, {"text": "hi", "sampling_params": {"max_new_tokens": 8, "temperature": 0, "stop": "x",
                                                                 "sampling_seed": 1}, "return_logprob": True, "top_logprobs_num": 2}),
        "generate_batch": (2, {"input_ids": [[1, 2], [3, 4, 5]], "stream": True, "sampling_params": {"n": 1, "ignore_eos": True}}),
        "generate_list": (2, {"text": ["a", "b"], "rid": "r1"}),
    }
    for name, (route, body) in seeds.items():
        write("fuzz_http_request", name, bytes([route]) + dumps(body).encode())


if __name__ == "__main__":
    safetensors_seeds()
    gguf_seeds()
    config_seeds()
    tokenizer_seeds()
    chat_template_seeds()
    http_seeds()
    total = sum(f.stat().st_size for f in out_root.rglob("*") if f.is_file())
    print(f"seed corpora in {out_root}: {total} bytes")
