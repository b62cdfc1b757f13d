"""Supervised LoRA / QLoRA fine-tuning of a chat model: ``train(config, observer) -> TrainingResult``.

With ``config.white_box`` set, the same run also learns a local teacher's token probabilities
(``finetune.white_box`` replaces the trainer's loss; everything else below holds).

The data is chat JSONL (one ``{"messages": [{"role", "content"}, ...]}`` per line, roles system, user and
assistant). Validation comes from ``validation_file`` or a seeded hold-out of the training file.

The base model is loaded in 4-bit NF4 with double quantization and prepared for k-bit training
(``quantization="nf4"``, QLoRA) or in full precision (``"none"``), wrapped in LoRA and trained with TRL's
``SFTTrainer``: evaluation and a checkpoint (``output_dir/checkpoint-<step>``) every epoch, a log every step.
The observer hears every log, checkpoint and phase, and is asked after every step whether to stop.
On CUDA the compute is bf16 with activation checkpointing; on a CPU, fp32 without. ``trained_tokens``
counts every non-padding token of every step (prompts included, as OpenAI's ``trained_tokens`` does).

**Loss on assistant tokens only, every assistant turn.** A support conversation's earlier agent answers are
as much the domain as its last one, and OpenAI's fine-tuning (whose API the service mirrors) trains all
assistant messages; the prompt-completion format would train only the last turn of multi-turn data. So the
trainer gets a copy of the chat template with ``{% generation %}`` markers around each assistant message and
its end-of-turn token (the stop token must be learnt) and ``assistant_only_loss=True``. The copy renders
exactly like the original (only the markers differ), so the model trains on the text it sees when served.
The copy comes from, in turn: the template itself when it has markers; the ChatML turn of SmolLM2-style
templates, marked here; TRL's training templates for the families it knows (Qwen, Llama 3, Gemma, ...).
Another template is a ``TrainingError`` that says to add the markers. After TRL tokenizes and truncates to
``max_seq_length``, the labels are checked (TRL silently drops examples left without a trained token): none
left in the training or validation set is an error, some dropped is a warning.

**Resume.** ``output_dir`` holding complete ``checkpoint-*`` directories (a run that died) makes ``train``
resume from the latest; incomplete ones (no ``trainer_state.json``, killed while saving) are removed.

**Outputs.** The adapter goes to ``output_dir/adapter``; the merged model (the base reloaded unquantized,
LoRA merged in, saved in the base's dtype with tokenizer and generation config) to ``output_dir/merged``.
Both are written to a ``.partial`` sibling and renamed, so a half-written directory is never left.

torch, transformers, peft, trl and datasets are imported inside the functions that use them: the API
imports this module and must start fast.

Raises ``TrainingError`` (bad data or set-up; the message says what to fix) and
``finetune.progress.TrainingStopped`` (the observer asked to stop).
"""

from __future__ import annotations

import gc
import json
import random
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from finetune.config import Hyperparameters, TrainingConfig
from finetune.progress import Checkpoint, Metrics, TrainingObserver, TrainingStopped

if TYPE_CHECKING:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import (
        PretrainedConfig,
        PreTrainedModel,
        PreTrainedTokenizerBase,
        TrainerCallback,
        TrainerState,
    )
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

ROLES = frozenset({"system", "user", "assistant"})
Conversation = list[dict[str, str]]

#: One message of a ChatML template in the SmolLM2 style, and the same with the assistant's part marked.
_CHATML_TURN = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
_CHATML_TURN_MARKED = (
    "{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}"
)
_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class TrainingResult:
    adapter_dir: Path
    merged_dir: Path
    #: Tokens the model was trained on (padding excluded), all epochs.
    trained_tokens: int
    final: Metrics


class TrainingError(Exception):
    """The data or the set-up cannot be trained on; the message says what to fix."""


def train(config: TrainingConfig, observer: TrainingObserver) -> TrainingResult:
    """Fine-tune ``config.base_model`` on ``config.training_file``; resumes from a checkpoint left behind."""
    training, validation = load_examples(config)
    resume_from = resume_checkpoint(config.output_dir, observer)
    trained_tokens, final = _train_adapter(config, observer, training, validation, resume_from)
    gc.collect()  # the trainer and its model are gone before the base is loaded again to merge
    observer.message("merging the adapter into the base model")
    merged_dir = merge_adapter(config.base_model, config.output_dir / "adapter", config.output_dir / "merged")
    observer.message(f"done: adapter in {config.output_dir / 'adapter'}, merged model in {merged_dir}")
    return TrainingResult(config.output_dir / "adapter", merged_dir, trained_tokens, final)


# --- data ----------------------------------------------------------------------------------------------


def load_examples(config: TrainingConfig) -> tuple[list[Conversation], list[Conversation]]:
    """Training and validation conversations: the validation file, else a seeded hold-out."""
    examples = load_conversations(config.training_file)
    if config.validation_file is not None:
        return examples, load_conversations(config.validation_file)
    return hold_out(examples, config.validation_split, config.seed)


def load_conversations(path: Path) -> list[Conversation]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingError(f"cannot read {path}: {exc}") from exc
    conversations = [
        _parse_line(f"{path.name} line {n}", line) for n, line in enumerate(lines, 1) if line.strip()
    ]
    if not conversations:
        raise TrainingError(f"{path} holds no examples: write one {{'messages': [...]}} object per line")
    return conversations


def _parse_line(where: str, line: str) -> Conversation:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TrainingError(f"{where}: not valid JSON ({exc.msg})") from exc
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not messages:
        raise TrainingError(f"{where}: expected an object with a non-empty 'messages' list")
    conversation = [_parse_message(f"{where}: messages[{i}]", message) for i, message in enumerate(messages)]
    if not any(message["role"] == "assistant" for message in conversation):
        raise TrainingError(f"{where}: no assistant message to train on")
    return conversation


def _parse_message(where: str, message: object) -> dict[str, str]:
    if not isinstance(message, dict):
        raise TrainingError(f"{where}: expected an object with 'role' and 'content'")
    role, content = message.get("role"), message.get("content")
    if role not in ROLES:
        raise TrainingError(f"{where}: role must be one of {sorted(ROLES)}, not {role!r}")
    if not isinstance(content, str):
        raise TrainingError(f"{where}: content must be a string")
    return {"role": str(role), "content": content}


def hold_out(
    examples: list[Conversation], fraction: float, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    """Split off ``fraction`` of the examples (at least one, and at least one left) with a seeded shuffle."""
    if fraction <= 0 or len(examples) < 2:
        return examples, []
    count = min(len(examples) - 1, max(1, round(len(examples) * fraction)))
    held = set(random.Random(seed).sample(range(len(examples)), count))
    training = [example for i, example in enumerate(examples) if i not in held]
    return training, [example for i, example in enumerate(examples) if i in held]


# --- checkpoints ---------------------------------------------------------------------------------------


def resume_checkpoint(output_dir: Path, observer: TrainingObserver) -> Path | None:
    """The latest complete checkpoint in ``output_dir``; incomplete ones (killed while saving) are removed."""
    checkpoints = sorted(_checkpoint_dirs(output_dir), key=_checkpoint_step)
    while checkpoints and not (checkpoints[-1] / "trainer_state.json").is_file():
        incomplete = checkpoints.pop()
        observer.message(f"removing incomplete checkpoint {incomplete.name}", "warn")
        shutil.rmtree(incomplete)
    return checkpoints[-1] if checkpoints else None


def _checkpoint_dirs(output_dir: Path) -> list[Path]:
    if not output_dir.is_dir():
        return []
    return [path for path in output_dir.iterdir() if path.is_dir() and _CHECKPOINT_DIR.match(path.name)]


def _checkpoint_step(path: Path) -> int:
    match = _CHECKPOINT_DIR.match(path.name)
    return int(match.group(1)) if match else -1


def _replace_dir(target: Path, write: Callable[[Path], None]) -> Path:
    """Write a directory next to ``target`` and rename it into place, so ``target`` is whole or absent."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    write(partial)
    if target.exists():
        shutil.rmtree(target)
    partial.replace(target)
    return target


# --- model and template --------------------------------------------------------------------------------


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def base_model_config(base_model: str) -> PretrainedConfig:
    """The base's config, less the GGUF ``quantization_config`` a converted copy keeps (its weights are
    plain safetensors; transformers would refuse to quantize it again, or to save it)."""
    from transformers import AutoConfig

    model_config: PretrainedConfig = AutoConfig.from_pretrained(base_model)
    quantization = getattr(model_config, "quantization_config", None)
    method = quantization.get("quant_method") if isinstance(quantization, dict) else None
    if method == "gguf" or getattr(quantization, "quant_method", None) == "gguf":
        del model_config.quantization_config
    return model_config


def load_base_model(base_model: str, hyperparameters: Hyperparameters) -> PreTrainedModel:
    """The model LoRA wraps: 4-bit NF4 with double quantization, prepared for k-bit training, or fp32."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict[str, Any] = {"config": base_model_config(base_model), "dtype": torch.float32}
    if hyperparameters.quantization == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if _on_gpu() else torch.float32,
        )
        if _on_gpu():
            kwargs["device_map"] = {"": torch.cuda.current_device()}
    model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(base_model, **kwargs)
    if hyperparameters.quantization == "nf4":
        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model, use_gradient_checkpointing=_on_gpu()
        )
        _keep_4bit_weights_trainable(model)
    return model


def _keep_4bit_weights_trainable(model: PreTrainedModel) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference.

    On a CPU with AVX512-BF16, a ``Linear4bit`` that runs once in eval mode without gradients (an
    evaluation, an on-policy sample) repacks its weights for a faster kernel, for good, and that kernel
    has no backward: every later training step would pass no gradient through the frozen layers, so the
    LoRA weights below the top of the network stop learning, silently.
    """
    from bitsandbytes.nn.modules import Linear4bit

    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False


def training_chat_template(tokenizer: PreTrainedTokenizerBase) -> str:
    """The tokenizer's chat template with ``{% generation %}`` markers around each assistant message."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("default")
    if not isinstance(template, str):
        raise TrainingError("the base model has no chat template: add a chat_template.jinja to its directory")
    if has_generation_markers(template):
        return template
    if template.count(_CHATML_TURN) == 1:
        return template.replace(_CHATML_TURN, _CHATML_TURN_MARKED)
    try:
        known = get_training_chat_template(tokenizer)
    except ValueError as exc:
        raise TrainingError(
            "the base model's chat template has no {% generation %} markers and no marked copy is known: "
            "wrap each assistant message and its end-of-turn token in {% generation %}...{% endgeneration %} "
            "in its chat_template.jinja"
        ) from exc
    return known or template


def _lora_config(hyperparameters: Hyperparameters) -> LoraConfig:
    from peft import LoraConfig

    return LoraConfig(
        r=hyperparameters.lora_r,
        lora_alpha=hyperparameters.lora_alpha,
        lora_dropout=hyperparameters.lora_dropout,
        target_modules=hyperparameters.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _sft_config(config: TrainingConfig, evaluate: bool) -> SFTConfig:
    import torch
    from trl.trainer.sft_config import SFTConfig

    hyperparameters = config.hyperparameters
    on_gpu = _on_gpu()
    return SFTConfig(
        output_dir=str(config.output_dir),
        num_train_epochs=hyperparameters.n_epochs,
        per_device_train_batch_size=hyperparameters.batch_size,
        per_device_eval_batch_size=hyperparameters.batch_size,
        learning_rate=hyperparameters.learning_rate,
        seed=config.seed,
        max_length=config.max_seq_length,
        assistant_only_loss=True,
        eval_strategy="epoch" if evaluate else "no",
        save_strategy="epoch",
        logging_strategy="steps",
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        # Activation checkpointing trades compute for GPU memory; on a CPU memory is not what runs out.
        activation_checkpointing=on_gpu,
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        fp16=False,
        dataloader_pin_memory=on_gpu,
    )


# --- training ------------------------------------------------------------------------------------------


def _train_adapter(
    config: TrainingConfig,
    observer: TrainingObserver,
    training: list[Conversation],
    validation: list[Conversation],
    resume_from: Path | None,
) -> tuple[int, Metrics]:
    """Train, save the adapter; the trained tokens and the final metrics. The model is freed on return."""
    from transformers import AutoTokenizer

    hyperparameters = config.hyperparameters
    observer.message(f"loading {config.base_model} (quantization: {hyperparameters.quantization})")
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    tokenizer.chat_template = training_chat_template(tokenizer)
    tracker = _Tracker(observer, config.output_dir)
    trainer = _build_trainer(config, tokenizer, training, validation, tracker)
    for name, prepared, count in (
        ("training", trainer.train_dataset, len(training)),
        ("validation", trainer.eval_dataset, len(validation)),
    ):
        if count:
            _check_labels(_labels(prepared), count, name, config.max_seq_length, observer)
    if resume_from is not None:
        observer.message(f"resuming from {resume_from.name}")
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if tracker.stopped:
        raise TrainingStopped(f"stopped at step {trainer.state.global_step} of {trainer.state.max_steps}")
    observer.message("saving the adapter")
    _replace_dir(config.output_dir / "adapter", lambda path: _save_adapter(trainer, config.base_model, path))
    return int(trainer.state.num_input_tokens_seen), tracker.latest(trainer.state)


def _build_trainer(
    config: TrainingConfig,
    tokenizer: PreTrainedTokenizerBase,
    training: list[Conversation],
    validation: list[Conversation],
    tracker: _Tracker,
) -> SFTTrainer:
    from datasets import Dataset
    from transformers import PrinterCallback, ProgressCallback
    from trl.trainer.sft_trainer import SFTTrainer

    def dataset(conversations: list[Conversation]) -> Dataset:
        return Dataset.from_list([{"messages": conversation} for conversation in conversations])

    arguments: dict[str, Any] = {
        "model": load_base_model(config.base_model, config.hyperparameters),
        "args": _sft_config(config, evaluate=bool(validation)),
        "train_dataset": dataset(training),
        "eval_dataset": dataset(validation) if validation else None,
        "processing_class": tokenizer,
        "peft_config": _lora_config(config.hyperparameters),
        "callbacks": [_observer_callback(tracker)],
    }
    if config.white_box is None:
        trainer = SFTTrainer(**arguments)
    else:
        from finetune.white_box import white_box_trainer

        tracker.observer.message(
            f"white-box distillation ({config.white_box.mode}) from teacher {config.white_box.teacher_model}"
        )
        trainer = white_box_trainer(config.white_box, **arguments)
    for noisy in (PrinterCallback, ProgressCallback):  # the observer reports progress
        trainer.remove_callback(noisy)
    return trainer


def _labels(prepared: Any) -> list[list[int]]:
    """The label column of a dataset as the trainer prepared it (-100: not trained on)."""
    return list(prepared["labels"]) if prepared is not None else []


def _check_labels(
    labels: list[list[int]], expected: int, name: str, max_seq_length: int, observer: TrainingObserver
) -> None:
    """Fail when no example has an assistant token left to train on; warn when some have none."""
    trainable = sum(1 for example in labels if any(label != -100 for label in example))
    if trainable == 0:
        raise TrainingError(
            f"no {name} example has an assistant token to train on within max_seq_length={max_seq_length}: "
            "the assistant turns are empty or cut off; raise max_seq_length or shorten the conversations"
        )
    if trainable < expected:
        observer.message(
            f"{expected - trainable} of {expected} {name} examples have no assistant token within "
            f"max_seq_length={max_seq_length} and are skipped",
            "warn",
        )


def _save_adapter(trainer: SFTTrainer, base_model: str, path: Path) -> None:
    from transformers import AutoTokenizer

    cast("PeftModel", trainer.model).save_pretrained(str(path))
    AutoTokenizer.from_pretrained(base_model).save_pretrained(path)


def merge_adapter(base_model: str, adapter_dir: Path, target: Path) -> Path:
    """The base reloaded unquantized with the adapter merged in, saved with its tokenizer to ``target``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_config = base_model_config(base_model)
    base = AutoModelForCausalLM.from_pretrained(base_model, config=model_config, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged = merged.to(_stored_dtype(model_config))
    tokenizer = AutoTokenizer.from_pretrained(base_model)

    def write(path: Path) -> None:
        merged.save_pretrained(path)
        tokenizer.save_pretrained(path)

    return _replace_dir(target, write)


def _stored_dtype(model_config: PretrainedConfig) -> torch.dtype:
    import torch

    dtype = getattr(model_config, "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


# --- progress ------------------------------------------------------------------------------------------


class _Tracker:
    """Turns the trainer's events into observer calls; counts training time for tokens per second."""

    def __init__(self, observer: TrainingObserver, output_dir: Path) -> None:
        self.observer, self.output_dir = observer, output_dir
        self.stopped = False
        self._train: Metrics | None = None
        self._eval: Metrics | None = None
        self._first_tokens: int | None = None
        self._step_started = 0.0
        self._train_seconds = 0.0

    def began(self, state: TrainerState) -> None:
        if state.global_step:
            self.observer.message(f"training resumes at step {state.global_step} of {state.max_steps}")
        else:
            self.observer.message(f"training starts: {state.max_steps} steps")

    def step_began(self, state: TrainerState) -> None:
        if self._first_tokens is None:
            self._first_tokens = state.num_input_tokens_seen
        self._step_started = time.perf_counter()

    def step_ended(self) -> bool:
        """Whether the observer asks to stop."""
        self._train_seconds += time.perf_counter() - self._step_started
        self.stopped = self.stopped or self.observer.should_stop()
        return self.stopped

    def logged(self, state: TrainerState, logs: Mapping[str, float]) -> None:
        if "eval_loss" in logs:
            self._eval = replace(
                self._at(state),
                eval_loss=float(logs["eval_loss"]),
                mean_token_accuracy=_float(logs.get("eval_mean_token_accuracy")),
            )
            self.observer.metrics(self._eval)
        elif "loss" in logs:
            self._train = replace(
                self._at(state),
                train_loss=float(logs["loss"]),
                mean_token_accuracy=_float(logs.get("mean_token_accuracy")),
                learning_rate=_float(logs.get("learning_rate")),
                ce_loss=_float(logs.get("ce_loss")),
                kd_loss=_float(logs.get("kd_loss")),
                tokens_per_second=self._tokens_per_second(state),
            )
            self.observer.metrics(self._train)

    def saved(self, state: TrainerState) -> None:
        path = self.output_dir / f"checkpoint-{state.global_step}"
        metrics = self.latest(state)
        self.observer.checkpoint(Checkpoint(state.global_step, metrics.epoch, path, metrics))

    def latest(self, state: TrainerState) -> Metrics:
        """The last training metrics with the last evaluation's loss when it was at the same step."""
        metrics = self._train or self._at(state)
        if self._eval is not None and self._eval.step == metrics.step:
            metrics = replace(metrics, eval_loss=self._eval.eval_loss)
        return metrics

    def _at(self, state: TrainerState) -> Metrics:
        return Metrics(step=state.global_step, total_steps=state.max_steps, epoch=float(state.epoch or 0.0))

    def _tokens_per_second(self, state: TrainerState) -> float | None:
        if self._first_tokens is None or self._train_seconds <= 0:
            return None
        return (state.num_input_tokens_seen - self._first_tokens) / self._train_seconds


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _observer_callback(tracker: _Tracker) -> TrainerCallback:
    """A ``TrainerCallback`` (defined here to keep transformers out of module import) driving ``tracker``."""
    from transformers import TrainerCallback, TrainerControl, TrainingArguments

    class ObserverCallback(TrainerCallback):
        def on_train_begin(
            self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
        ) -> None:
            tracker.began(state)

        def on_step_begin(
            self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
        ) -> None:
            tracker.step_began(state)

        def on_step_end(
            self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
        ) -> None:
            if tracker.step_ended():
                control.should_training_stop = True

        def on_epoch_end(
            self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
        ) -> None:
            if tracker.stopped:  # a stop mid-epoch still ends the epoch: no evaluation, no checkpoint
                control.should_evaluate = control.should_save = False

        def on_log(
            self,
            args: TrainingArguments,
            state: TrainerState,
            control: TrainerControl,
            logs: dict[str, float] | None = None,
            **kwargs: Any,
        ) -> None:
            tracker.logged(state, logs or {})

        def on_save(
            self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
        ) -> None:
            tracker.saved(state)

    return ObserverCallback()
