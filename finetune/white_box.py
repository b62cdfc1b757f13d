"""White-box distillation: the student learns from a local teacher's token probabilities.

The loss, per training batch (``finetune.config.DistillationLoss`` names its parameters)::

    ce_weight * CE(student, reference answer) + (1 - ce_weight) * T**2 * KL(teacher_T || student_T)

where ``_T`` is a softmax at temperature T and both terms are means over assistant tokens. The KL is
taken on the reference answers' tokens in ``logits`` mode; in ``on_policy`` mode the student first
samples its own answer to each prompt and the teacher scores every token of it (generalized knowledge
distillation, Agarwal et al. 2024), so the student learns where its own answers go wrong. Evaluation
reports the plain CE on the validation answers in every mode, so eval losses compare across modes.

The trainer is TRL's ``SFTTrainer`` (the data, assistant-only labels, LoRA/QLoRA, checkpoints and resume
of a supervised run) with ``compute_loss`` replaced. TRL's own ``DistillationTrainer`` and GKD trainer
were not used: they train on prompts with a divergence-only loss, while this loss keeps the supervised
term on the reference answers, and SFTTrainer's fused loss never builds the logits a KL needs.

torch, transformers and trl are imported inside the functions that use them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from finetune.config import WhiteBox
from finetune.distill import end_of_turn_ids

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel
    from trl.trainer.sft_trainer import SFTTrainer

IGNORE = -100


class UnusableTeacher(ValueError):
    """A local teacher that cannot be loaded, or whose vocabulary is not the student's."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def check_local_teacher(student: str, teacher: str, *, shared_vocabulary: bool) -> None:
    """Raise ``UnusableTeacher`` unless the teacher's tokenizer loads and, when ``shared_vocabulary``,
    maps the same strings to the same ids as the student's (token probabilities are compared by id)."""
    from transformers import AutoTokenizer

    try:
        teacher_vocab = AutoTokenizer.from_pretrained(teacher).get_vocab()
    except (OSError, ValueError) as exc:
        raise UnusableTeacher(
            f"cannot load the local teacher {teacher!r}: name a model this service serves, a model "
            f"directory on the worker or a hub id ({type(exc).__name__})",
            "teacher_not_found",
        ) from exc
    if not shared_vocabulary:
        return
    student_vocab = AutoTokenizer.from_pretrained(student).get_vocab()
    if student_vocab != teacher_vocab:
        differing = len(set(student_vocab.items()) ^ set(teacher_vocab.items()))
        raise UnusableTeacher(
            f"the teacher's vocabulary ({len(teacher_vocab)} tokens) is not the student's "
            f"({len(student_vocab)} tokens; {differing} entries differ): modes 'logits' and 'on_policy' "
            "compare token probabilities and need a shared tokenizer; use mode 'black_box' for this teacher",
            "vocabulary_mismatch",
        )


# --- the loss ------------------------------------------------------------------------------------------


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the next-token predictions on the labelled (assistant) tokens."""
    import torch.nn.functional as F

    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels[:, 1:].reshape(-1), ignore_index=IGNORE
    )


def kd_divergence(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T**2 * KL(softmax(teacher/T) || softmax(student/T))``, averaged over the positions in ``mask``.

    Logits are ``[batch, positions, vocabulary]``; a teacher with a padded output layer is cut to the
    student's vocabulary (the tokenizers were checked to be the same).
    """
    import torch.nn.functional as F

    vocabulary = min(student_logits.size(-1), teacher_logits.size(-1))
    student = student_logits[mask][:, :vocabulary].float() / temperature
    teacher = teacher_logits[mask][:, :vocabulary].float() / temperature
    if student.numel() == 0:
        return student_logits.sum() * 0.0  # no trained token in the batch: a zero that keeps the graph
    teacher_log = F.log_softmax(teacher, dim=-1)
    divergence = F.kl_div(F.log_softmax(student, dim=-1), teacher_log, log_target=True, reduction="batchmean")
    return divergence * temperature**2


def last_answer_starts(labels: torch.Tensor) -> list[int]:
    """Per example, where its last labelled span (the final assistant answer) begins: the prompt ends there.

    An example without a labelled token (cut off by ``max_seq_length``) gets its full length.
    """
    starts = []
    for row in labels.tolist():
        start = len(row)
        for position in range(len(row) - 1, -1, -1):
            if row[position] != IGNORE:
                start = position
            elif start != len(row):
                break
        starts.append(start)
    return starts


def student_samples(
    model: Any,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    *,
    pad_id: int,
    eos_ids: list[int],
    max_new_tokens: int,
    temperature: float,
) -> dict[str, torch.Tensor]:
    """The student's own answers to the batch's prompts, as a batch to score.

    Returns ``input_ids``, ``attention_mask`` and ``position_ids`` of prompt + answer (prompts left-padded)
    and ``answer_mask``: the sampled tokens up to and including the first end-of-turn token.
    """
    import torch

    prompts = [ids[:start] for ids, start in zip(input_ids, last_answer_starts(labels), strict=True)]
    width = max(len(prompt) for prompt in prompts)
    padded = input_ids.new_full((len(prompts), width), pad_id)
    prompt_mask = torch.zeros_like(padded)
    for row, prompt in enumerate(prompts):
        padded[row, width - len(prompt) :] = prompt
        prompt_mask[row, width - len(prompt) :] = 1
    was_training = model.training
    model.eval()  # no dropout while sampling
    try:
        with torch.no_grad():
            output = model.generate(
                input_ids=padded,
                attention_mask=prompt_mask,
                do_sample=True,
                temperature=temperature,
                top_p=1.0,
                top_k=0,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=eos_ids,
            )
    finally:
        model.train(was_training)
    answers = output[:, width:]
    is_end = torch.isin(answers, torch.tensor(eos_ids, device=answers.device))
    after_end = (is_end.long().cumsum(dim=1) - is_end.long()) > 0
    answer_mask = (~after_end).long()
    attention_mask = torch.cat([prompt_mask, answer_mask], dim=1)
    return {
        "input_ids": output,
        "attention_mask": attention_mask,
        "position_ids": (attention_mask.cumsum(dim=1) - 1).clamp(min=0),
        "answer_mask": torch.cat([torch.zeros_like(prompt_mask), answer_mask], dim=1).bool(),
    }


# --- the trainer ---------------------------------------------------------------------------------------


def load_teacher(path: str, device: torch.device) -> PreTrainedModel:
    """The teacher, frozen, in evaluation mode, on the student's device (bf16 on a GPU, else fp32)."""
    import torch
    from transformers import AutoModelForCausalLM

    from finetune.training import base_model_config

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    teacher: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
        path, config=base_model_config(path), dtype=dtype
    )
    teacher.to(device)  # type: ignore[arg-type]
    teacher.eval()  # type: ignore[no-untyped-call]
    teacher.requires_grad_(False)
    return teacher


def white_box_trainer(white_box: WhiteBox, **sft_arguments: Any) -> SFTTrainer:
    """An ``SFTTrainer`` whose training loss is the distillation loss of ``white_box``."""
    import torch
    from trl.trainer.sft_trainer import SFTTrainer

    loss = white_box.loss

    class WhiteBoxTrainer(SFTTrainer):
        def __init__(self, **arguments: Any) -> None:
            super().__init__(**arguments)
            student: Any = self.model
            tokenizer: Any = self.processing_class
            self.teacher = load_teacher(white_box.teacher_model, student.device)
            self.eos_ids = end_of_turn_ids(student, tokenizer)
            self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            if not model.training:  # evaluation: the CE on the validation answers, comparable across modes
                return super().compute_loss(  # type: ignore[no-untyped-call]
                    model, inputs, return_outputs, num_items_in_batch
                )
            labels = inputs["labels"]
            forward = {key: value for key, value in inputs.items() if key != "labels"}
            outputs = model(**forward, use_cache=False)
            ce = supervised_loss(outputs.logits, labels)
            if white_box.mode == "logits":
                scored, mask, student_logits = forward, labels[:, 1:] != IGNORE, outputs.logits
            else:
                sampled = student_samples(
                    self.accelerator.unwrap_model(model),
                    inputs["input_ids"],
                    labels,
                    pad_id=self.pad_id,
                    eos_ids=self.eos_ids,
                    max_new_tokens=white_box.on_policy.max_new_tokens,
                    temperature=white_box.on_policy.temperature,
                )
                mask = sampled.pop("answer_mask")[:, 1:]
                scored = sampled
                student_logits = model(**scored, use_cache=False).logits
            with torch.no_grad():
                teacher_logits = self.teacher(**scored, use_cache=False).logits
            kd = kd_divergence(student_logits[:, :-1], teacher_logits[:, :-1], mask, loss.temperature)
            total = loss.ce_weight * ce + (1 - loss.ce_weight) * kd
            self._record(outputs.logits, labels, ce, kd)
            return (total, outputs) if return_outputs else total

        def _record(
            self, logits: torch.Tensor, labels: torch.Tensor, ce: torch.Tensor, kd: torch.Tensor
        ) -> None:
            metrics = self._metrics["train"]
            mask = labels[:, 1:] != IGNORE
            correct = (logits[:, :-1].argmax(dim=-1) == labels[:, 1:]) & mask
            metrics["mean_token_accuracy"].append((correct.sum() / mask.sum().clamp(min=1)).item())
            metrics["ce_loss"].append(ce.item())
            metrics["kd_loss"].append(kd.item())

    return WhiteBoxTrainer(**sft_arguments)
