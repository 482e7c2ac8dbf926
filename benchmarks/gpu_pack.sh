#!/usr/bin/env bash
# Pack what benchmarks/gpu.sh needs on a machine that reaches no package index, into .gpu/ (ignored):
#   .gpu/llama-src.tar.gz  llama-cpp-python's source (the version installed here), slimmed to what a CUDA
#                          build reads (its sdist is 73 MB, over what travels; this is about a fifth of it)
#   .gpu/wheels/           cp312 manylinux wheels of the project's dependencies the CUDA image lacks
#   .gpu/vocab.gguf        the LocoOperator-4B-shaped tokenizer alone (synthetic_model.py pads SmolLM2's
#                          vocabulary; the 94 MB SmolLM2 file itself does not travel)
# Then prints the sizes against the 64 MiB a call may carry. Run from anywhere: benchmarks/gpu_pack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=/work/main/.venv/bin/python
out=.gpu
rm -rf "$out" && mkdir -p "$out/wheels"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
quiet=(--quiet --disable-pip-version-check)

version=$("$PY" -c 'from importlib.metadata import version; print(version("llama_cpp_python"))')
"$PY" -m pip download "${quiet[@]}" --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work" 2>/dev/null
tar xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work"
src="$work/llama_cpp_python-$version"
v="$src/vendor/llama.cpp"
# What a CUDA build of the library never reads: git objects, docs, test vocabularies, web UI, benches,
# the other GPU backends' sources (each is added only when its GGML_<NAME> option is on).
rm -rf "$src/.git" "$src/docs" "$src/tests" "$src/examples" "$v/docs" "$v/benches" "$v/media" "$v/tools/ui" \
    "$v/tests" "$v/examples" "$v/gguf-py" "$v/conversion" "$v/scripts" "$v/.github" "$v/app"
find "$v/models" -name '*.gguf' -delete
for backend in cann et hexagon metal musa opencl openvino sycl virtgpu vulkan webgpu zdnn zendnn hip blas; do
    rm -rf "$v/ggml/src/ggml-$backend"
done
tar czf "$out/llama-src.tar.gz" -C "$work" "llama_cpp_python-$version"

# The dependency closure of mcp-loco and gguf, less what the CUDA image ships (KINDS.md's package list).
"$PY" - "$out/wheels.txt" <<'PYEOF'
import re, sys
from importlib import metadata
image = set("""anyio attrs certifi charset-normalizer click cmake filelock fsspec h11 hf-xet httpcore httpx
huggingface-hub idna jinja2 markupsafe ninja numpy packaging pathspec pip pyyaml requests rich scikit-build-core
sentencepiece setuptools shellingham tqdm typer typing-extensions urllib3 wheel zipp""".split())
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
seen, todo = {}, ["mcp-loco", "gguf"]
while todo:
    name = todo.pop()
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        continue  # a requirement of another platform or Python (pywin32, tomli...)
    if norm(name) in seen:
        continue
    seen[norm(name)] = dist.version
    todo += [re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0] for r in dist.requires or [] if "extra ==" not in r]
skip = image | {"mcp-loco", "llama-cpp-python"}
open(sys.argv[1], "w").write("".join(f"{n}=={v}\n" for n, v in sorted(seen.items()) if n not in skip))
PYEOF
platforms=()
for n in 17 24 27 28 31 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
"$PY" -m pip download "${quiet[@]}" --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" --platform manylinux2014_x86_64 -d "$out/wheels" -r "$out/wheels.txt" 2>/dev/null

"$PY" - "$out/vocab.gguf" <<'PYEOF'
import sys
sys.path.insert(0, "benchmarks")
from pathlib import Path
from _common import default_model
from synthetic_model import padded_tokenizer, write_vocab
write_vocab(Path(sys.argv[1]), padded_tokenizer(default_model()))
PYEOF

tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
packed=$(du -sb "$out" | cut -f1)
echo "llama-cpp-python $version source: $(du -h "$out/llama-src.tar.gz" | cut -f1)," \
    "$(find "$out/wheels" -name '*.whl' | wc -l) wheels: $(du -sh "$out/wheels" | cut -f1)," \
    "vocabulary: $(du -h "$out/vocab.gguf" | cut -f1)"
echo "travels: $(( (tree + packed) / 1048576 )) MiB of 64 (tracked tree $(( tree / 1048576 )) MiB, .gpu $(( packed / 1048576 )) MiB)"
[ $(( tree + packed )) -lt $(( 64 * 1048576 )) ] || { echo "over the 64 MiB a call carries" >&2; exit 1; }
