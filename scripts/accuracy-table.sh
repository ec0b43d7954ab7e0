#!/usr/bin/env bash
# Reproduces the accuracy table of docs/accuracy.md: SmolLM2-135M perplexity
# on the GNU Coding Standards (first 24576 tokens, windows of 512), with Atom
# calibrated on the GNU Maintainers' guide (first 16384 tokens), both from the
# Debian package gnu-standards (scripts/fetch-eval-text.sh).
#
# usage: scripts/accuracy-table.sh [BUILD_DIR] [WORK_DIR]
#   BUILD_DIR  holds the atomserve binary (default: build)
#   WORK_DIR   texts, checkpoints, logs and results.jsonl (default: BUILD_DIR/accuracy)
# Environment: ATOMSERVE_MODEL (default: models/SmolLM2-135M-Instruct.Q4_1.gguf),
#   EVAL_TOKENS (24576), CALIB_TOKENS (16384).
# Takes about 30 minutes on 2 CPU cores. Prints a Markdown table at the end.
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(cd "${1:-$src/build}" && pwd)"
work="${2:-$build/accuracy}"
mkdir -p "$work"
bin="$build/atomserve"
model="${ATOMSERVE_MODEL:-$src/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
eval_tokens="${EVAL_TOKENS:-24576}"
calib_tokens="${CALIB_TOKENS:-16384}"
texts="$work/eval-text"
[[ -f "$texts/gnu-standards.txt" && -f "$texts/gnu-maintain.txt" ]] || "$src/scripts/fetch-eval-text.sh" "$texts"
eval_text="$texts/gnu-standards.txt"
calib_text="$texts/gnu-maintain.txt"
results="$work/results.jsonl"
: > "$results"

# row NAME COMMAND... : runs an `eval ppl` command, records its JSON line.
row() {
  local name="$1"; shift
  echo "== $name: $*" >&2
  local line
  line="$("$@" --text "$eval_text" --max-tokens "$eval_tokens" --ctx 512 --json 2>"$work/$name.log" | tail -1)"
  echo "{\"row\": \"$name\", \"command\": \"$*\", \"result\": $line}" >> "$results"
  echo "   $line" >&2
}

# quantize NAME ARGS... : writes $work/NAME.atom once.
quantize() {
  local name="$1"; shift
  if [[ ! -f "$work/$name.atom" ]]; then
    echo "== quantize $name: $*" >&2
    "$bin" quantize --model "$model" --calib "$calib_text" --calib-tokens "$calib_tokens" --seq-len 512 \
      --out "$work/$name.atom" "$@" 2>"$work/quantize-$name.log" | tee -a "$work/quantize.jsonl" >&2
  fi
}

row fp32          "$bin" eval ppl --model "$model"
row w8a8          "$bin" eval ppl --model "$model" --quant w8a8
row naive-w4a4    "$bin" eval ppl --model "$model" --quant naive-w4a4

quantize atom-rtn --no-gptq
quantize atom-gptq
quantize atom-gptq-k64 --keeper 64
quantize atom-gptq-k0 --keeper 0

row atom-rtn          "$bin" eval ppl --model "$work/atom-rtn.atom"
row atom-gptq         "$bin" eval ppl --model "$work/atom-gptq.atom"
row atom-gptq-kv4     "$bin" eval ppl --model "$work/atom-gptq.atom" --kv4
row atom-gptq-kv4-pre "$bin" eval ppl --model "$work/atom-gptq.atom" --kv4-pre-rope
row fp32-kv4          "$bin" eval ppl --model "$model" --kv4
row fp32-kv4-pre      "$bin" eval ppl --model "$model" --kv4-pre-rope
row atom-gptq-k64     "$bin" eval ppl --model "$work/atom-gptq-k64.atom"
row atom-gptq-k0      "$bin" eval ppl --model "$work/atom-gptq-k0.atom"
row atom-gptq-fake    "$bin" eval ppl --model "$work/atom-gptq.atom" --fake-quant

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
base = next(r["result"]["perplexity"] for r in rows if r["row"] == "fp32")
print("| row | perplexity | vs FP32 | linears | KV | seconds |")
print("| --- | --- | --- | --- | --- | --- |")
for r in rows:
    x = r["result"]
    print(f"| {r['row']} | {x['perplexity']:.3f} | {100 * (x['perplexity'] / base - 1):+.1f}% | "
          f"{x['path']} | {x['kv']} | {x['seconds']:.0f} |")
PY
