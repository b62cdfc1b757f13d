"""Modelfiles for what the service serves: the configured model (the top-level ``Modelfile``) and the
fine-tuned models (``assistant export ollama ft:...``), with the service's system prompt and temperature.

Raises ``ExportError``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from assistant.chat import system_instruction
from assistant.model_store import DEFAULT_MODEL_GGUF, resolve_model_dir
from assistant.settings import Settings
from finetune import jobs
from finetune.modelfile import Modelfile, ModelfileError, for_model

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: Where ``make install`` links the bundled GGUF, relative to the top-level Modelfile.
DEFAULT_GGUF_LINK = f"./models/{DEFAULT_MODEL_GGUF}"


class ExportError(Exception):
    pass


def modelfile_for(settings: Settings, model_dir: str, source: str) -> Modelfile:
    """The Modelfile of a model the service serves, ``FROM source``, with the service's defaults."""
    system = system_instruction(settings.chat.system_prompt, settings.chat.default_style, {})
    try:
        return for_model(
            model_dir,
            source,
            system=system,
            temperature=settings.chat.default_temperature,
            num_ctx=settings.model.context_window,
        )
    except ModelfileError as exc:
        raise ExportError(f"{model_dir}: {exc}") from exc


def service_modelfile(settings: Settings) -> str:
    """The top-level Modelfile's text: the configured model (by default the bundled GGUF)."""
    model_dir = resolve_model_dir(settings.model.path, settings.cache_dir)
    source = settings.model.path or DEFAULT_GGUF_LINK
    usage = "# Build and run: ollama create assistant -f Modelfile && ollama run assistant\n"
    if source == DEFAULT_GGUF_LINK:
        usage += "# `make install` (part of both set-up commands) links the bundled GGUF into models/.\n"
    return modelfile_for(settings, model_dir, source).text(comment=usage)


def export_fine_tuned(session: Session, settings: Settings, name: str, target: Path) -> Path:
    """Copy a fine-tuned model's merged safetensors to ``target/model`` and write ``target/Modelfile``.

    Ollama imports llama-architecture safetensors from a folder (``FROM ./model``); PEFT adapters are
    not used because current Ollama does not find PEFT's file names.
    """
    row = jobs.find_model(session, name)
    if row is None:
        raise ExportError(f"no fine-tuned model named {name!r}; GET /v1/models lists them")
    weights = Path(row.path)
    if not (weights / "config.json").is_file():
        raise ExportError(f"the merged weights of {name} are missing from {weights}")
    if target.exists():
        raise ExportError(f"{target} already exists; remove it or pass another --output")
    modelfile = modelfile_for(settings, str(weights), "./model")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(weights, partial / "model")
    usage = f"# Build and run: ollama create {target.name} -f Modelfile && ollama run {target.name}\n"
    (partial / "Modelfile").write_text(modelfile.text(comment=f"# {name}\n{usage}"))
    partial.rename(target)
    return target
