"""A training run's configuration: one typed, validated object.

It is stored as JSON on the job row and is what ``assistant finetune run CONFIG`` reads, so a job and a
scripted run train the same way. Validation errors name the field (pydantic's ``loc``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: The learning rate that ``learning_rate_multiplier`` scales (a usual LoRA rate for small models).
BASE_LEARNING_RATE = 2e-4

Quantization = Literal["nf4", "none"]


class Hyperparameters(BaseModel):
    """OpenAI's supervised hyperparameters plus the LoRA extras; ``"auto"`` takes the default."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: int = Field(3, ge=1, le=100)
    batch_size: int = Field(8, ge=1, le=512)
    learning_rate_multiplier: float = Field(1.0, gt=0, le=100)
    lora_r: int = Field(16, ge=1, le=512)
    lora_alpha: int = Field(32, ge=1, le=4096)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    #: ``"all-linear"`` (every linear layer but the output head) or module names such as ``q_proj``.
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    #: ``nf4``: 4-bit NF4 base weights with double quantization (QLoRA); ``none``: plain LoRA.
    quantization: Quantization = "nf4"

    @field_validator("n_epochs", "batch_size", "learning_rate_multiplier", mode="before")
    @classmethod
    def _auto_is_default(cls, value: object, info: object) -> object:
        if value == "auto":
            field_name = getattr(info, "field_name", "")
            return cls.model_fields[field_name].default
        return value

    @field_validator("target_modules")
    @classmethod
    def _some_modules(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list) and not (value and all(value)):
            raise ValueError("must be 'all-linear' or a non-empty list of module names")
        return value

    @property
    def learning_rate(self) -> float:
        return BASE_LEARNING_RATE * self.learning_rate_multiplier


class DistillationLoss(BaseModel):
    """``ce_weight * CE(reference answer) + (1 - ce_weight) * temperature**2 * KL(teacher || student)``.

    Named explicitly because frameworks disagree on which term an "alpha" weights: here ``ce_weight`` is
    the weight of the cross-entropy on the reference answers, the rest goes to the teacher's soft targets.
    """

    model_config = ConfigDict(extra="forbid")

    ce_weight: float = Field(0.7, ge=0, le=1)
    #: Softens both distributions before the KL; the T**2 factor keeps its gradients on the CE's scale.
    temperature: float = Field(4.0, gt=0, le=100)


class OnPolicySampling(BaseModel):
    """How the student samples its own answers in ``on_policy`` mode (the teacher then scores them)."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(64, ge=1, le=4096)
    temperature: float = Field(1.0, gt=0, le=2)


class WhiteBox(BaseModel):
    """Train against a local teacher's token probabilities (it must share the student's tokenizer).

    ``logits``: the KL term is taken on the reference answers' tokens. ``on_policy``: the student answers
    each prompt itself and the KL term is taken on its own tokens (generalized knowledge distillation),
    while the CE term stays on the reference answers.
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["logits", "on_policy"]
    #: Hugging Face model directory (or hub id) of the teacher.
    teacher_model: str
    loss: DistillationLoss = DistillationLoss()
    on_policy: OnPolicySampling = OnPolicySampling()


class TrainingConfig(BaseModel):
    """Everything one LoRA/QLoRA run needs (supervised, or distilling a local teacher)."""

    model_config = ConfigDict(extra="forbid")

    #: Hugging Face model directory (or hub id) of the base model.
    base_model: str
    #: Chat JSONL: one ``{"messages": [...]}`` per line.
    training_file: Path
    #: Chat JSONL for evaluation; unset: ``validation_split`` of the training file is held out.
    validation_file: Path | None = None
    validation_split: float = Field(0.1, ge=0, lt=1)
    #: Checkpoints (``checkpoint-<step>``), the adapter (``adapter/``) and the merged model (``merged/``).
    output_dir: Path
    seed: int = 42
    #: Longest example in tokens; longer ones are rejected at upload, so this is a safety net.
    max_seq_length: int = Field(2048, ge=16)
    hyperparameters: Hyperparameters = Hyperparameters()
    #: Set: distil a local teacher's token probabilities as well (``finetune.white_box``).
    white_box: WhiteBox | None = None
