"""Peak RSS of the streamed PTQ (`tunelab quantize` on a local safetensors folder) and the streamed QLoRA
merge, on a synthetic checkpoint, each in its own process.

    python benchmarks/stream_export.py --params 1b [--dir /tmp/big] [--keep]

ptq:   ptq.stream_quantize(nf4 + double quant, rest bf16) + ptq.save        -> peak, output bytes
merge: a random LoRA adapter (r=16, all 7 projections, B != 0) saved with peft, then
       export.merge_stream.stream_merge_qlora into bf16 shards of 1 GiB     -> peak, output bytes
For reference, the whole-model paths hold the fp32 model: 4 x params bytes (printed as whole_fp32_gb).
Prints one JSON object; peaks are VmHWM minus the RSS before the work (imports excluded).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

PTQ = """
import json, sys, torch
from tunelab.quant import ptq, stream_load
from tunelab.runtime.allocator import reset_peak_rss, status_mb
src, out = sys.argv[1], sys.argv[2]
stream_load.warm_up(src, torch.bfloat16)
rss0 = status_mb("VmRSS"); reset_peak_rss()
m = ptq.stream_quantize(src, "nf4", True, rest_dtype=torch.bfloat16)
man = ptq.save(m, out)
print(json.dumps({"peak_gb": (status_mb("VmHWM") - rss0) * 2**20 / 1e9, "out_gb": man["bytes_on_disk"] / 1e9,
                  "model_gb": stream_load.model_bytes(m) / 1e9}))
"""

ADAPTER = """
import sys, torch
from tunelab.adapters.lora import apply_lora
from tunelab.config import MethodConfig
from tunelab.quant.stream_load import stream_quantized
src, out = sys.argv[1], sys.argv[2]
model = apply_lora(stream_quantized(src), MethodConfig(name="qlora", r=16, layers="all"))
with torch.no_grad():
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.normal_(0, 0.01)
model.save_pretrained(out)
"""

MERGE = """
import json, sys, torch
from pathlib import Path
from tunelab.export.merge_stream import stream_merge_qlora
from tunelab.quant import stream_load
from tunelab.runtime.allocator import reset_peak_rss, status_mb
src, adapter, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
stream_load.warm_up(src)
import peft  # noqa: F401  (imports outside the measured span)
rss0 = status_mb("VmRSS"); reset_peak_rss()
_, params, deq, merged = stream_merge_qlora(src, adapter, out, torch.bfloat16, max_shard_bytes=1024**3)
size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
print(json.dumps({"peak_gb": (status_mb("VmHWM") - rss0) * 2**20 / 1e9, "out_gb": size / 1e9, "params": params,
                  "dequantized": deq, "merged": merged, "shards": len(list(out.glob("*.safetensors")))}))
"""


def _run(code: str, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", choices=("7b", "1b", "100m"), default="1b")
    ap.add_argument("--dir", default="/tmp/big")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    from tunelab.models.synthetic import (
        llama_config,
        param_count,
        write_synthetic_llama,
    )

    root = Path(args.dir)
    src = write_synthetic_llama(root / args.params, args.params, max_shard_bytes=2 * 1024**3)
    work = root / f"{args.params}-export"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ptq = _run(PTQ, src, work / "nf4")
    _run(ADAPTER, src, work / "adapter")
    merge = _run(MERGE, src, work / "adapter", work / "merged")
    params = param_count(llama_config(args.params))
    print(json.dumps({"params": params, "whole_fp32_gb": round(4 * params / 1e9, 2),
                      "ptq": {k: round(v, 3) if isinstance(v, float) else v for k, v in ptq.items()},
                      "merge": {k: round(v, 3) if isinstance(v, float) else v for k, v in merge.items()}}))
    shutil.rmtree(work, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(src, ignore_errors=True)


if __name__ == "__main__":
    main()
