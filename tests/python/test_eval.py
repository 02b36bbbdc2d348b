"""nibble eval / nibble validate against independent computations with transformers.

(a) perplexity over the same sliding windows equals a transformers (torch, float32) computation
    of the same GGUF within 0.1%;
(b) ARC-Easy picks by log-likelihood match a transformers computation with
    lm-evaluation-harness conventions on >= 99.5% of items (ARC_ITEMS items: 40 by default to
    keep the suite short, 200 with NIBBLE_EVAL_FULL=1);
(c) the quality gate fails on a deliberately broken checkpoint and passes on Q8_0;
(d) the HTML report is self-contained and charts the weight error of every linear layer, which
    points at the damaged layers of the broken checkpoint and agrees with gguf-py's
    dequantization of the Q8_0 file; several models are compared side by side.
"""
import re
import json
import os
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")
gguf = pytest.importorskip("gguf")

CONTEXT = 512
STRIDE = 256  # overlapping windows exercise the "score only new tokens" rule
N_WINDOWS = 8
ARC_ITEMS = 200 if os.environ.get("NIBBLE_EVAL_FULL") else 40


@pytest.fixture(scope="module")
def reference(default_gguf):
    tok = transformers.AutoTokenizer.from_pretrained(default_gguf.parent, gguf_file=default_gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        default_gguf.parent, gguf_file=default_gguf.name, dtype=torch.float32)
    model.eval()
    return tok, model


@pytest.fixture(scope="module")
def text_file(shared_data, tmp_path_factory):
    # The head of wikitext-2 (bytes as stored, CRLF kept): enough tokens for N_WINDOWS.
    data = (shared_data / "text" / "wikitext-2-raw-test.txt").read_bytes()[:60000]
    data = data[: data.rfind(b"\n") + 1]
    path = tmp_path_factory.mktemp("eval") / "wiki_head.txt"
    path.write_bytes(data)
    return path


def nibble_json(nibble_bin, args, tmp_path, name):
    out = tmp_path / f"{name}.json"
    subprocess.run([str(nibble_bin), *args, "--json", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def test_perplexity_matches_transformers(nibble_bin, default_gguf, reference, text_file, tmp_path):
    ours = nibble_json(nibble_bin, ["eval", "ppl", "--model-path", str(default_gguf), "--dtype",
                                    "float32", "--file", str(text_file), "--context", str(CONTEXT),
                                    "--stride", str(STRIDE), "--max-windows", str(N_WINDOWS)],
                       tmp_path, "ppl")
    tok, model = reference
    text = text_file.read_bytes().decode("utf-8")
    ids = tok(text, add_special_tokens=False).input_ids
    assert ours["text_tokens"] == len(ids)
    # The Hugging Face perplexity guide's loop, with the NLL summed per token.
    nll, count, prev_end = 0.0, 0, 0
    windows = 0
    with torch.no_grad():
        for begin in range(0, len(ids), STRIDE):
            if windows == N_WINDOWS:
                break
            end = min(begin + CONTEXT, len(ids))
            target_len = end - prev_end
            x = torch.tensor([ids[begin:end]])
            logprobs = torch.log_softmax(model(x).logits[0].double(), dim=-1)
            targets = x[0, 1:]
            token_nll = -logprobs[:-1].gather(1, targets[:, None])[:, 0]
            scored = token_nll[-min(target_len, end - begin - 1):]
            nll += float(scored.sum())
            count += scored.numel()
            windows += 1
            prev_end = end
            if end == len(ids):
                break
    ppl = float(np.exp(nll / count))
    assert ours["tokens"] == count
    assert ours["windows"] == windows
    assert abs(ours["ppl"] - ppl) / ppl < 1e-3, (ours["ppl"], ppl)
    assert 0 < ours["ppl_stderr"] < ours["ppl"]


def harness_pair(tok, context, continuation):
    """lm-evaluation-harness's _encode_pair (no special tokens)."""
    n_spaces = len(context) - len(context.rstrip(" "))
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok(context + continuation, add_special_tokens=False).input_ids
    ctx = tok(context, add_special_tokens=False).input_ids
    return whole[:len(ctx)], whole[len(ctx):]


def test_arc_easy_picks_match_transformers(nibble_bin, default_gguf, reference, shared_data,
                                           tmp_path):
    ours = nibble_json(nibble_bin, ["eval", "mc", "--model-path", str(default_gguf), "--dtype",
                                    "float32", "--data-dir", str(shared_data), "--task",
                                    "arc_easy", "--limit", str(ARC_ITEMS)], tmp_path, "arc")
    tok, model = reference
    rows = [json.loads(l) for l in
            (shared_data / "eval" / "arc_easy.jsonl").read_text(encoding="utf-8").splitlines()[:ARC_ITEMS]]
    assert ours["items"] == len(rows)
    same, same_norm = 0, 0
    with torch.no_grad():
        for row, mine in zip(rows, ours["per_item"]):
            context = row["query"] + "\nAnswer:"
            seqs, conts = [], []
            for choice in row["choices"]:
                ctx, cont = harness_pair(tok, context, " " + choice)
                seqs.append(ctx + cont)
                conts.append(len(cont))
            width = max(len(s) for s in seqs)
            x = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
            logprobs = torch.log_softmax(model(x, attention_mask=mask).logits.double(), dim=-1)
            scores = []
            for i, (s, n) in enumerate(zip(seqs, conts)):
                positions = range(len(s) - n, len(s))
                scores.append(sum(float(logprobs[i, p - 1, s[p]]) for p in positions))
            pick = int(np.argmax(scores))
            pick_norm = int(np.argmax([sc / len(c) for sc, c in zip(scores, row["choices"])]))
            same += pick == mine["pick"]
            same_norm += pick_norm == mine["pick_norm"]
            np.testing.assert_allclose(mine["logprobs"], scores, rtol=1e-3, atol=1e-3)
    assert same / len(rows) >= 0.995
    assert same_norm / len(rows) >= 0.995


N_LINEAR = 30 * 7  # SmolLM2-135M: 30 blocks of q, k, v, o, gate, up, down


def run_validate(nibble_bin, model, reference, shared_data, tmp_path, name, extra=(),
                 windows="2"):
    out = tmp_path / f"{name}.json"
    report = tmp_path / f"{name}.html"
    models = model if isinstance(model, (list, tuple)) else [model]
    argv = [str(nibble_bin), "validate", "--reference", str(reference), "--data-dir",
            str(shared_data), "--max-windows", windows, "--json", str(out), "--report", str(report)]
    for m in models:
        argv += ["--model", str(m)]
    proc = subprocess.run(argv + list(extra), capture_output=True, text=True)
    return proc, json.loads(out.read_text()), report.read_text()


def assert_self_contained(html):
    """One file: nothing fetched, nothing run (internal #anchors are fine)."""
    lowered = html.lower()
    for needle in ("http://", "https://", "<script", "<link", "<img", "<iframe", "src=", "url(",
                   "@import"):
        assert needle not in lowered, needle
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', html))


def layer_bars(html):
    """data-layer names of the per-layer chart bars, in page order."""
    return re.findall(r'<rect data-layer="([^"]+)"', html)


def gguf_weight(reader, name):
    t = next(t for t in reader.tensors if t.name == name)
    return gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)


def test_gate_passes_q8_0_and_fails_broken_model(nibble_bin, default_gguf, shared_data, tmp_path):
    q8 = tmp_path / "q8_0.gguf"
    subprocess.run([str(nibble_bin), "convert", str(default_gguf), "--out", str(q8), "--dtype",
                    "Q8_0"], check=True, stdout=subprocess.DEVNULL)
    proc, result, html = run_validate(nibble_bin, q8, default_gguf, shared_data, tmp_path, "q8")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert result["passed"] and result["scheme_family"] == "8-bit"
    assert "<svg" in html and "PASSED" in html
    assert_self_contained(html)
    # One bar per linear layer, named as the JSON names them.
    layers = result["layers"]
    assert len(layers) == N_LINEAR
    assert layer_bars(html) == [l["name"] for l in layers]
    assert len(set(layer_bars(html))) == N_LINEAR
    assert all(l["format"] == "Q8_0" for l in layers)
    # The relative Frobenius error, recomputed from both files with gguf-py (q/k rows are
    # permuted the same way in both GGUF files, which leaves the norms unchanged).
    ref_reader, q8_reader = gguf.GGUFReader(str(default_gguf)), gguf.GGUFReader(str(q8))
    for hf_name, gguf_name in (("model.layers.0.self_attn.q_proj", "blk.0.attn_q.weight"),
                               ("model.layers.29.mlp.down_proj", "blk.29.ffn_down.weight")):
        w_ref, w_q8 = gguf_weight(ref_reader, gguf_name), gguf_weight(q8_reader, gguf_name)
        expected = np.linalg.norm(w_q8 - w_ref) / np.linalg.norm(w_ref)
        ours = next(l for l in layers if l["name"] == hf_name)["relative_error"]
        assert abs(ours - expected) <= 1e-6 * expected + 1e-12, (hf_name, ours, expected)
    assert all(0 < l["relative_error"] < 0.02 for l in layers)

    # A plausible-looking but damaged checkpoint: the MLP down projections of a few layers
    # scaled by 1.5 (as a wrong dequantization scale would do).
    broken = tmp_path / "broken"
    subprocess.run([str(nibble_bin), "convert", str(default_gguf), "--out", str(broken),
                    "--dtype", "bf16"], check=True, stdout=subprocess.DEVNULL)
    tensors = safetensors_torch.load_file(str(broken / "model.safetensors"))
    for layer in (2, 9, 17):
        name = f"model.layers.{layer}.mlp.down_proj.weight"
        tensors[name] = (tensors[name].float() * 1.5).to(torch.bfloat16)
    safetensors_torch.save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    proc, result, html = run_validate(nibble_bin, broken, default_gguf, shared_data, tmp_path,
                                      "broken")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert not result["passed"] and result["scheme_family"] == "16-bit"
    failing = [c["metric"] for c in result["checks"] if not c["pass"]]
    assert "kld_mean" in failing
    assert "kld_mean" in proc.stderr
    assert "FAILED" in html
    assert_self_contained(html)
    # The per-layer weight error points at the damaged layers: x1.5 is a relative error of 0.5
    # there, against bf16 rounding (< 0.01) everywhere else.
    by_error = sorted(result["layers"], key=lambda l: -l["relative_error"])
    assert {l["name"] for l in by_error[:3]} == {f"model.layers.{i}.mlp.down_proj" for i in (2, 9, 17)}
    assert all(abs(l["relative_error"] - 0.5) < 0.01 for l in by_error[:3])
    assert by_error[3]["relative_error"] < 0.01
    assert len(layer_bars(html)) == N_LINEAR

    # Side by side: both models against the same reference in one run; the exit status
    # reports the failing one by name.
    proc, result, html = run_validate(nibble_bin, [q8, broken], default_gguf, shared_data,
                                      tmp_path, "both", windows="1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    models = result["models"]
    assert [m["label"] for m in models] == ["q8_0.gguf", "broken"]
    assert [m["passed"] for m in models] == [True, False]
    assert not result["passed"]
    assert "broken: kld_mean" in proc.stderr and "q8_0.gguf:" not in proc.stderr
    assert len({m["reference_ppl"]["ppl"] for m in models}) == 1
    assert "Side by side" in html
    assert len(layer_bars(html)) == 2 * N_LINEAR
    assert html.count("<polyline") == 2 * 2  # KLD distribution and layer error curves per model
    assert_self_contained(html)
    assert "(reference)" in proc.stdout  # the comparison table

    # A method list runs every --model once per method: a GGUF file refuses an online method
    # before anything is scored.
    proc = subprocess.run([str(nibble_bin), "validate", "--model", str(broken), "--model", str(q8),
                           "--reference", str(default_gguf), "--quantization", "none,q8_0"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "already quantized" in proc.stderr, proc.stderr


def test_quantize_lm_head_on_a_tied_gguf_runs_the_embedding_blocks(nibble_bin, default_gguf,
                                                                    text_file, tmp_path):
    """--quantize-lm-head on the default GGUF (tied, token_embd in a block type): lm_head runs
    the file's blocks instead of the dequantized embedding and the lookups read the same
    blocks, the same weights, so perplexity agrees to rounding while the model holds, and a
    decode step reads, about half the bytes."""
    args = ["eval", "ppl", "--model-path", str(default_gguf), "--dtype", "float32", "--file",
            str(text_file), "--context", str(CONTEXT), "--stride", str(STRIDE), "--max-windows", "1"]
    plain = nibble_json(nibble_bin, args, tmp_path, "plain")
    head = nibble_json(nibble_bin, args + ["--quantize-lm-head"], tmp_path, "head")
    assert head["ppl"] == pytest.approx(plain["ppl"], rel=1e-4)

    def bench(*extra):
        out = subprocess.run([str(nibble_bin), "bench", "-m", str(default_gguf), "--prompt-tokens",
                              "4", "--gen-tokens", "2", "--repeats", "1", "--threads", "1",
                              "--json", *extra], check=True, capture_output=True, text=True)
        return json.loads(out.stdout)
    dense, blocks = bench(), bench("--quantize-lm-head")
    assert blocks["step_weight_bytes"] < 0.6 * dense["step_weight_bytes"]
    assert blocks["weight_bytes"] < 0.6 * dense["weight_bytes"]
