"""White-box distillation on the real default model: the loss from real logits, both modes training.

The teacher is the default model with noise added to its MLP weights (saved to a temporary directory):
it shares the student's tokenizer, as the modes require, and disagrees with the student from step one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from assistant.model_store import resolve_model_dir
from assistant.settings import Settings
from finetune.config import DistillationLoss, Hyperparameters, OnPolicySampling, TrainingConfig, WhiteBox
from finetune.training import TrainingResult, base_model_config, train, training_chat_template
from finetune.white_box import (
    IGNORE,
    UnusableTeacher,
    check_local_teacher,
    kd_divergence,
    last_answer_starts,
    student_samples,
    supervised_loss,
)
from tests.test_training import CONVERSATIONS, Recorder

pytestmark = pytest.mark.model


# --- the loss, on small tensors --------------------------------------------------------------------------


def test_kd_divergence_is_t_squared_times_the_kl_over_masked_positions() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    mask = torch.tensor([[True, False, True, True, False], [False, False, True, False, False]])
    temperature = 2.5
    expected = []
    for b, t in mask.nonzero().tolist():
        p = F.softmax(teacher[b, t] / temperature, dim=-1)
        q = F.softmax(student[b, t] / temperature, dim=-1)
        expected.append((p * (p.log() - q.log())).sum())
    got = kd_divergence(student, teacher, mask, temperature)
    assert torch.allclose(got, torch.stack(expected).mean() * temperature**2, atol=1e-5)
    assert kd_divergence(teacher, teacher, mask, temperature).abs() < 1e-6
    # A teacher with a padded output layer is cut to the student's vocabulary.
    padded = torch.cat([teacher, torch.full((2, 5, 3), -1e4)], dim=-1)
    assert torch.allclose(kd_divergence(student, padded, mask, temperature), got, atol=1e-4)
    empty = kd_divergence(student.requires_grad_(), teacher, torch.zeros_like(mask), temperature)
    assert empty.item() == 0 and empty.requires_grad


def test_supervised_loss_is_the_next_token_cross_entropy_on_labelled_tokens() -> None:
    torch.manual_seed(1)
    logits = torch.randn(1, 4, 7)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 5]])
    expected = (
        F.cross_entropy(logits[0, 1], torch.tensor(3)) + F.cross_entropy(logits[0, 2], torch.tensor(5))
    ) / 2
    assert torch.allclose(supervised_loss(logits, labels), expected)


def test_the_prompt_ends_where_the_last_answer_starts() -> None:
    labels = torch.tensor(
        [
            [IGNORE, IGNORE, 7, 8, IGNORE, IGNORE, 9, 9, IGNORE],  # two answers: the prompt holds the first
            [IGNORE, 4, 4, 4, IGNORE, IGNORE, IGNORE, IGNORE, IGNORE],  # right padding after the answer
            [IGNORE] * 9,  # cut off before its answer
        ]
    )
    assert last_answer_starts(labels) == [6, 1, 9]


# --- the real model ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_model() -> str:
    settings = Settings()
    return resolve_model_dir(settings.model.path, settings.cache_dir)


@pytest.fixture(scope="module")
def teacher_model(base_model: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The default model with its MLP weights perturbed: same tokenizer, different predictions."""
    model = AutoModelForCausalLM.from_pretrained(
        base_model, config=base_model_config(base_model), dtype=torch.float32
    )
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if ".mlp." in name:
                weight.add_(torch.randn(weight.shape, generator=generator) * weight.std() * 0.5)
    path = tmp_path_factory.mktemp("teacher")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(base_model).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "support.jsonl"
    path.write_text("\n".join(json.dumps({"messages": c}) for c in CONVERSATIONS) + "\n")
    return path


@dataclass
class Run:
    config: TrainingConfig
    observer: Recorder
    result: TrainingResult


def run(base_model: str, data_file: Path, output_dir: Path, white_box: WhiteBox, epochs: int) -> Run:
    config = TrainingConfig(
        base_model=base_model,
        training_file=data_file,
        output_dir=output_dir,
        validation_split=0.15,
        max_seq_length=128,
        seed=7,
        hyperparameters=Hyperparameters(
            n_epochs=epochs, batch_size=4, learning_rate_multiplier=5, lora_r=8, lora_dropout=0.0
        ),
        white_box=white_box,
    )
    observer = Recorder()
    return Run(config, observer, train(config, observer))


@pytest.fixture(scope="module")
def logits_run(
    base_model: str, teacher_model: str, data_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Run:
    # ce_weight 0: the teacher's probabilities are all the student learns from.
    white_box = WhiteBox(
        mode="logits", teacher_model=teacher_model, loss=DistillationLoss(ce_weight=0.0, temperature=2.0)
    )
    return run(base_model, data_file, tmp_path_factory.mktemp("logits"), white_box, epochs=3)


@pytest.fixture(scope="module")
def on_policy_run(
    base_model: str, teacher_model: str, data_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Run:
    white_box = WhiteBox(
        mode="on_policy", teacher_model=teacher_model, on_policy=OnPolicySampling(max_new_tokens=24)
    )
    return run(base_model, data_file, tmp_path_factory.mktemp("on_policy"), white_box, epochs=1)


def mean_kl_to_teacher(
    model_dir: str | Path, teacher_model: str, data_file: Path, temperature: float
) -> float:
    """KL(teacher || model) on the assistant tokens of the data, computed here from scratch."""
    tokenizer = AutoTokenizer.from_pretrained(teacher_model)
    tokenizer.chat_template = training_chat_template(tokenizer)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_model, dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, config=base_model_config(str(model_dir)), dtype=torch.float32
    )
    total, count = 0.0, 0
    for line in data_file.read_text().splitlines():
        encoded = tokenizer.apply_chat_template(
            json.loads(line)["messages"],
            return_dict=True,
            return_assistant_tokens_mask=True,
            return_tensors="pt",
        )
        mask = encoded.pop("assistant_masks").bool()[:, 1:]
        with torch.no_grad():
            teacher_logits = teacher(**encoded).logits[:, :-1]
            model_logits = model(**encoded).logits[:, :-1]
        total += kd_divergence(model_logits, teacher_logits, mask, temperature).item() * int(mask.sum())
        count += int(mask.sum())
    return total / count


def adapter_weights(result: TrainingResult) -> dict[str, torch.Tensor]:
    return load_file(result.adapter_dir / "adapter_model.safetensors")


def test_logits_mode_logs_both_loss_terms_from_real_logits(logits_run: Run) -> None:
    steps = logits_run.observer.train_events
    assert steps
    for step in steps:
        assert step.kd_loss is not None and step.kd_loss > 0
        assert step.ce_loss is not None and step.ce_loss > 0
        assert step.train_loss == pytest.approx(step.kd_loss, rel=1e-4)  # ce_weight 0: all KD
    assert logits_run.observer.eval_events  # evaluation reports the plain CE on the validation answers


def test_logits_mode_moves_the_student_towards_the_teacher(
    logits_run: Run, base_model: str, teacher_model: str, data_file: Path
) -> None:
    lora_b = [w for name, w in adapter_weights(logits_run.result).items() if "lora_B" in name]
    assert lora_b and any(w.abs().sum() > 0 for w in lora_b)  # LoRA's B starts at zero: it was trained
    before = mean_kl_to_teacher(base_model, teacher_model, data_file, temperature=2.0)
    after = mean_kl_to_teacher(logits_run.result.merged_dir, teacher_model, data_file, temperature=2.0)
    assert after < 0.8 * before, (before, after)


def test_on_policy_mode_trains_on_the_students_own_answers(on_policy_run: Run) -> None:
    steps = on_policy_run.observer.train_events
    assert steps
    for step in steps:
        assert step.kd_loss is not None and step.kd_loss > 0
        assert step.ce_loss is not None
        # The default mix: 0.7 CE on the reference answers + 0.3 KD on the student's own answers.
        assert step.train_loss == pytest.approx(0.7 * step.ce_loss + 0.3 * step.kd_loss, rel=1e-3)
    lora_b = [w for name, w in adapter_weights(on_policy_run.result).items() if "lora_B" in name]
    assert any(w.abs().sum() > 0 for w in lora_b)


def test_student_samples_answer_the_prompt_and_mask_after_the_end_of_turn(base_model: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    tokenizer.chat_template = training_chat_template(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    rows = [
        tokenizer.apply_chat_template(c, return_dict=True, return_assistant_tokens_mask=True)
        for c in CONVERSATIONS[:3]
    ]
    width = max(len(r["input_ids"]) for r in rows)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    input_ids = torch.tensor([r["input_ids"] + [end] * (width - len(r["input_ids"])) for r in rows])
    labels = torch.tensor(
        [
            [t if m else IGNORE for t, m in zip(r["input_ids"], r["assistant_masks"], strict=True)]
            + [IGNORE] * (width - len(r["input_ids"]))
            for r in rows
        ]
    )
    torch.manual_seed(0)
    sampled = student_samples(
        model, input_ids, labels, pad_id=end, eos_ids=[end], max_new_tokens=20, temperature=1.0
    )
    starts = last_answer_starts(labels)
    prompt_width = max(starts)
    for row, start in enumerate(starts):
        prompt = sampled["input_ids"][row, prompt_width - start : prompt_width].tolist()
        assert prompt == input_ids[row, :start].tolist()
        assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")
        answer = sampled["input_ids"][row, prompt_width:].tolist()
        mask = sampled["answer_mask"][row, prompt_width:].tolist()
        assert not any(sampled["answer_mask"][row, :prompt_width].tolist())
        if end in answer:  # everything after the end of turn is padding, not trained on
            stop = answer.index(end)
            assert all(mask[: stop + 1]) and not any(mask[stop + 1 :])
        else:
            assert all(mask)
    assert sampled["attention_mask"].shape == sampled["input_ids"].shape == sampled["position_ids"].shape


def test_a_teacher_with_another_vocabulary_is_refused(base_model: str, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    tokenizer.add_tokens(["<order-number>", "<tracking-id>"])
    tokenizer.save_pretrained(tmp_path)
    check_local_teacher(base_model, str(tmp_path), shared_vocabulary=False)  # black-box does not care
    with pytest.raises(UnusableTeacher, match="vocabulary") as refused:
        check_local_teacher(base_model, str(tmp_path), shared_vocabulary=True)
    assert refused.value.code == "vocabulary_mismatch"
    with pytest.raises(UnusableTeacher, match="cannot load") as missing:
        check_local_teacher(base_model, str(tmp_path / "nothing-here"), shared_vocabulary=False)
    assert missing.value.code == "teacher_not_found"
