"""benchmarks/synthetic_model.py: Qwen3's vocabulary size and added tokens, and a 2-layer build llama.cpp loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import synthetic_model as sm  # noqa: E402


@pytest.mark.model
def test_tokenizer_has_qwen3s_size_and_added_tokens(small_model_path: Path) -> None:
    tok = sm.padded_tokenizer(small_model_path)
    assert len(tok.tokens) == len(tok.types) == 151936
    assert tok.tokens[151657] == "<tool_call>" and tok.tokens[151666] == "</tool_response>"
    assert {tok.types[i] for i in sm.ADDED_TOKENS} == {4}  # USER_DEFINED, as Qwen3's convert marks them
    assert tok.tokens[100000] == "[PAD100000]" and tok.types[100000] == 5  # UNUSED
    assert tok.tokens[tok.eos] == "<|im_end|>"


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.timeout(900)  # writes 1.1 GB of F16 and quantises it: minutes on 2 cores
def test_two_layer_build_loads_with_the_4b_shape(small_model_path: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "synthetic_model.py"), "--layers", "2", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    path = tmp_path / "loco4b-shaped-L2-Q4_K_M.gguf"
    assert not (tmp_path / "loco4b-shaped-L2-F16.gguf").exists()

    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=1, verbose=False)
    try:
        model = llm._model.model
        assert llama_cpp.llama_model_n_layer(model) == 2
        assert llama_cpp.llama_model_n_embd(model) == 2560
        assert llama_cpp.llama_model_n_head(model) == 32
        assert llama_cpp.llama_model_n_head_kv(model) == 8
        assert llm.n_vocab() == 151936
        # The added tokens are single tokens in the template and in plain text, as in Qwen3's vocabulary.
        assert llm.tokenize(b"<tool_call>", add_bos=False, special=False) == [151657]
        assert llm.tokenize(b"<|im_end|>", add_bos=False, special=True) == [2]
        llm.eval(llm.tokenize(b"hello world", add_bos=False))  # the graph runs
    finally:
        llm.close()
    # --from-2-layer copies those quantised blocks to more layers with the types llama.cpp picks for that depth.
    three = tmp_path / "three.gguf"
    sm.assemble(path, three, 3)
    import gguf

    reader = gguf.GGUFReader(three)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert [types[f"blk.{i}.ffn_down.weight"] for i in range(3)] == ["Q4_K", "Q4_K", "Q6_K"]
    assert types["token_embd.weight"] == "Q6_K" and "output.weight" not in types
    llm = llama_cpp.Llama(model_path=str(three), n_ctx=512, n_threads=1, verbose=False)
    try:
        assert llama_cpp.llama_model_n_layer(llm._model.model) == 3
    finally:
        llm.close()


def test_more_bits_matches_llama_cpps_q4_k_m_types() -> None:
    # Seen in llama.cpp's own Q4_K_M runs: 2 layers -> layer 1 Q6_K; 36 layers -> layers 0-3 Q6_K, 4 and 5 Q4_K.
    assert [sm.more_bits(i, 2) for i in range(2)] == [False, True]
    assert [sm.more_bits(i, 36) for i in range(6)] == [True, True, True, True, False, False]
    assert sum(sm.more_bits(i, 36) for i in range(36)) == 18
