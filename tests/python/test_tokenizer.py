"""Tokenizer parity: nibble's ids and text against `tokenizers` and transformers.

Invalid UTF-8 input: nibble replaces invalid bytes by U+FFFD (maximal subparts) before
tokenizing, which is what bytes.decode("utf-8", errors="replace") gives the Python side.
Lines (--lines) are split at b"\\n" only; a b"\\r" before it stays in the line.
"""
import json
import random
import subprocess

import pytest

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

HARD_STRINGS = [
    "",
    " ",
    "Hello world",
    " Hello  world ",
    "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flag 🇫🇷 and ZWJ 🏳️‍🌈 done",
    "中文分词测试，日本語のテキスト、한국어 텍스트",
    "combining: e\u0301 a\u0308 n\u0303 \u0065\u0301\u0302 Å vs A\u030a",
    "Arabic: مرحبا بالعالم — Hindi: नमस्ते दुनिया",
    "spaces:" + " " * 17 + "end",
    "newlines\n\n\n\nend\n",
    "\r\n\r\nwindows\r\nline",
    "tabs\t\t\tand\tmore \t \t",
    "digits 1234567890 3.14159 1,000,000 007",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more<|im_end|>",
    "<|im_start|><|im_start|>",
    "half <|im_start without end |> and <| im_end|>",
    "I'm you're he'll we've they'd IT'S DON'T",
    "    def f(x):\n        return x ** 2  # comment\n",
    "ſ long s and K kelvin",
    "\u00a0nbsp\u2009thin\u3000ideographic\u200bzero-width",
    "a" * 300,
    "mixed👍🏽text中文123abc",
]


def nibble_encode_strings(nibble_bin, model_path, strings, tmp_path, special=True):
    src = tmp_path / "strings.jsonl"
    src.write_text("\n".join(json.dumps(s) for s in strings) + "\n", encoding="utf-8")
    cmd = [str(nibble_bin), "tokenize", "--model-path", str(model_path), "--file", str(src), "--json-lines"]
    if not special:
        cmd.append("--no-special")
    out = subprocess.run(cmd, check=True, capture_output=True).stdout.decode().splitlines()
    # Empty strings are written as "" (a non-empty JSON line), so counts match.
    assert len(out) == len(strings)
    return [json.loads(line) for line in out]


def nibble_decode(nibble_bin, model_path, id_lists, tmp_path, skip_special=False):
    src = tmp_path / "ids.jsonl"
    src.write_text("\n".join(json.dumps(ids) for ids in id_lists) + "\n")
    cmd = [str(nibble_bin), "detokenize", "--model-path", str(model_path), "--ids-file", str(src)]
    if skip_special:
        cmd.append("--skip-special")
    out = subprocess.run(cmd, check=True, capture_output=True).stdout.decode("utf-8").splitlines()
    assert len(out) == len(id_lists)
    return [json.loads(line) for line in out]


def wikitext_lines(shared_data, limit=None):
    data = (shared_data / "text" / "wikitext-2-raw-test.txt").read_bytes()
    lines = [line.decode("utf-8", errors="replace") for line in data.split(b"\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines[:limit] if limit else lines


# ---- (a) the default model: nibble (GGUF) vs transformers AutoTokenizer(gguf_file=...) ----------


@pytest.fixture(scope="module")
def hf_gguf_tokenizer(default_gguf):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(default_gguf.parent), gguf_file=default_gguf.name)


def test_default_model_wikitext_every_line(nibble_bin, default_gguf, shared_data, hf_gguf_tokenizer):
    path = shared_data / "text" / "wikitext-2-raw-test.txt"
    out = subprocess.run(
        [str(nibble_bin), "tokenize", "--model-path", str(default_gguf), "--file", str(path), "--lines"],
        check=True, capture_output=True,
    ).stdout.decode().splitlines()
    lines = wikitext_lines(shared_data)
    assert len(out) == len(lines)
    expected = hf_gguf_tokenizer(lines).input_ids
    for number, (line, got, want) in enumerate(zip(lines, out, expected)):
        assert json.loads(got) == want, f"line {number + 1}: {line!r}"


def test_default_model_hard_strings(nibble_bin, default_gguf, hf_gguf_tokenizer, tmp_path):
    got = nibble_encode_strings(nibble_bin, default_gguf, HARD_STRINGS, tmp_path)
    for text, ids in zip(HARD_STRINGS, got):
        assert ids == hf_gguf_tokenizer(text).input_ids, repr(text)
    got = nibble_encode_strings(nibble_bin, default_gguf, HARD_STRINGS, tmp_path, special=False)
    for text, ids in zip(HARD_STRINGS, got):
        assert ids == hf_gguf_tokenizer(text, add_special_tokens=False).input_ids, repr(text)


def test_default_model_invalid_utf8_file(nibble_bin, default_gguf, hf_gguf_tokenizer, tmp_path):
    cases = [b"abc\xff\xfedef", b"\xe4\xbd", b"x\xe4\xbdy", b"\xc0\xaf overlong", b"\xed\xa0\x80 surrogate",
             b"ok \xf0\x9f\x98 cut emoji", b"\x80\x80\x80", "caf\u00e9".encode("latin-1")]
    for raw in cases:
        path = tmp_path / "raw.bin"
        path.write_bytes(raw)
        out = subprocess.run(
            [str(nibble_bin), "tokenize", "--model-path", str(default_gguf), "--file", str(path)],
            check=True, capture_output=True,
        ).stdout.decode()
        text = raw.decode("utf-8", errors="replace")
        assert json.loads(out) == hf_gguf_tokenizer(text).input_ids, repr(raw)


def test_default_model_decode(nibble_bin, default_gguf, shared_data, hf_gguf_tokenizer, tmp_path):
    rng = random.Random()
    lines = [line for line in wikitext_lines(shared_data, 400) if line.strip()]
    id_lists = [hf_gguf_tokenizer(text).input_ids for text in HARD_STRINGS + rng.sample(lines, 40)]
    vocab = len(hf_gguf_tokenizer)
    # Random ids cut characters anywhere: decode must still match, and streaming must agree.
    id_lists += [[rng.randrange(vocab) for _ in range(rng.randrange(1, 30))] for _ in range(40)]
    for skip in (False, True):
        got = nibble_decode(nibble_bin, default_gguf, id_lists, tmp_path, skip_special=skip)
        for ids, (text, streamed) in zip(id_lists, got):
            want = hf_gguf_tokenizer.decode(ids, skip_special_tokens=skip)
            assert text == want, ids
            assert streamed == want, ids


# ---- (b) to_hf_json round trip ---------------------------------------------------------------


def test_default_model_hf_json_round_trip(nibble_bin, default_gguf, shared_data, tmp_path):
    export = tmp_path / "exported"
    subprocess.run([str(nibble_bin), "tokenize", "--model-path", str(default_gguf), "--export-hf", str(export)],
                   check=True, capture_output=True)
    reloaded = Tokenizer.from_str((export / "tokenizer.json").read_text(encoding="utf-8"))
    strings = HARD_STRINGS + wikitext_lines(shared_data, 800)
    from_gguf = nibble_encode_strings(nibble_bin, default_gguf, strings, tmp_path)
    from_dir = nibble_encode_strings(nibble_bin, export, strings, tmp_path)
    for text, a, b in zip(strings, from_gguf, from_dir):
        assert a == reloaded.encode(text).ids, repr(text)
        assert b == a, repr(text)


# ---- (c), (d): tokenizer.json families trained here with `tokenizers` ------------------------


def train(tokenizer, shared_data, vocab_size, special_tokens, alphabet=()):
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=list(alphabet), show_progress=False)
    tokenizer.train_from_iterator(wikitext_lines(shared_data, 2500), trainer=trainer)
    return tokenizer


def with_byte_tokens(tokenizer):
    """SentencePiece vocabularies hold <0x00>..<0xFF> in the model vocab (not as added tokens)."""
    spec = json.loads(tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    return Tokenizer.from_str(json.dumps(spec))


def sentencepiece_prepend(shared_data):
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok = train(tok, shared_data, 1200, ["<unk>", "<s>", "</s>"])
    tok = with_byte_tokens(tok)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def sentencepiece_metaspace(shared_data):
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok = train(tok, shared_data, 1200, ["<unk>", "<s>", "</s>"])
    tok = with_byte_tokens(tok)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    tok.add_tokens([AddedToken("<mask>", lstrip=True, single_word=True), AddedToken("hello world", normalized=True)])
    return tok


def llama3_style(shared_data):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok = train(tok, shared_data, 1500, ["<|begin_of_text|>", "<|end_of_text|>"], pre_tokenizers.ByteLevel.alphabet())
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)]),
    ])
    tok.add_special_tokens(["<|eot_id|>"])
    return tok


def qwen2_style(shared_data):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok = train(tok, shared_data, 1500, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                pre_tokenizers.ByteLevel.alphabet())
    tok.add_tokens([AddedToken("<think>", rstrip=True), AddedToken("</think>", lstrip=True)])
    return tok


def gpt2_digits_style(shared_data):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok = train(tok, shared_data, 800, ["<|endoftext|>"], pre_tokenizers.ByteLevel.alphabet())
    tok.post_processor = processors.RobertaProcessing(("<|endoftext|>", 0), ("<|endoftext|>", 0))
    return tok


FAMILIES = {
    "sentencepiece_prepend": sentencepiece_prepend,
    "sentencepiece_metaspace": sentencepiece_metaspace,
    "llama3": llama3_style,
    "qwen2": qwen2_style,
    "gpt2_digits": gpt2_digits_style,
}

EXTRA_STRINGS = ["<mask> a<mask> <mask>, x", "say hello world now", "<think>  reasoning  </think> answer",
                 "<s>hi</s> <s> hi", "<|begin_of_text|>hey<|eot_id|>", "Ünïcödé façade naïve", "ｆｕｌｌｗｉｄｔｈ"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_tokenizer_json_family(family, nibble_bin, shared_data, tmp_path):
    tok = FAMILIES[family](shared_data)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    tok.save(str(model_dir / "tokenizer.json"))
    # Saved, then read back: the JSON nibble sees is exactly the one `tokenizers` uses.
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    strings = HARD_STRINGS + EXTRA_STRINGS + wikitext_lines(shared_data)[2500:3300]
    for special in (True, False):
        got = nibble_encode_strings(nibble_bin, model_dir, strings, tmp_path, special=special)
        for text, ids in zip(strings, got):
            assert ids == tok.encode(text, add_special_tokens=special).ids, repr(text)
    id_lists = [tok.encode(text).ids for text in strings[:60]]
    rng = random.Random()
    id_lists += [[rng.randrange(tok.get_vocab_size()) for _ in range(rng.randrange(1, 25))] for _ in range(40)]
    for skip in (False, True):
        decoded = nibble_decode(nibble_bin, model_dir, id_lists, tmp_path, skip_special=skip)
        for ids, (text, streamed) in zip(id_lists, decoded):
            want = tok.decode(ids, skip_special_tokens=skip)
            assert text == want, ids
            if "\ufffd" not in want:
                assert streamed == want, ids
    # Round trip through nibble's own tokenizer.json writer.
    export = tmp_path / "exported"
    subprocess.run([str(nibble_bin), "tokenize", "--model-path", str(model_dir), "--export-hf", str(export)],
                   check=True, capture_output=True)
    reloaded = Tokenizer.from_file(str(export / "tokenizer.json"))
    for text in strings[:80]:
        assert reloaded.encode(text).ids == tok.encode(text).ids, repr(text)


def test_sentencepiece_gguf_metadata(nibble_bin, shared_data, tmp_path):
    """A 'llama' (SentencePiece) GGUF vocabulary: nibble vs transformers reading the same file."""
    gguf = pytest.importorskip("gguf")
    transformers = pytest.importorskip("transformers")
    tok = sentencepiece_prepend(shared_data)
    vocab = tok.get_vocab()
    tokens = [None] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    # Scores that order merges like training did: later tokens were merged later.
    scores = [-float(i) for i in range(len(tokens))]
    types = [3 if t in ("<s>", "</s>") else 2 if t == "<unk>" else 6 if t.startswith("<0x") else 1 for t in tokens]
    path = tmp_path / "sp.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    strings = HARD_STRINGS + EXTRA_STRINGS + wikitext_lines(shared_data)[2500:2800]
    got = nibble_encode_strings(nibble_bin, path, strings, tmp_path)
    for text, ids in zip(strings, got):
        assert ids == hf(text).input_ids, repr(text)


def test_malformed_tokenizer_json_errors(nibble_bin, tmp_path):
    cases = {
        "no_model.json": ({"version": "1.0"}, "missing field 'model'"),
        "bad_merge.json": ({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b", "a c"]}},
                           "model.merges[1]"),
        "bad_id.json": ({"model": {"type": "BPE", "vocab": {"a": -4}, "merges": []}}, "out of range"),
    }
    for name, (spec, message) in cases.items():
        path = tmp_path / name
        path.write_text(json.dumps(spec))
        result = subprocess.run([str(nibble_bin), "tokenize", "--model-path", str(path), "--text", "a"],
                                capture_output=True)
        assert result.returncode == 1, name
        assert message in result.stderr.decode(), (name, result.stderr)
