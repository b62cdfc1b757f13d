"""The training core on the real default model: real QLoRA (NF4 on this CPU) and LoRA runs, no mocks.

Expensive runs are module fixtures shared by the tests that read them: one uninterrupted NF4 run, and
the same run stopped after its first checkpoint and resumed.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from assistant.model_store import resolve_model_dir
from assistant.settings import Settings
from finetune.config import Hyperparameters, TrainingConfig
from finetune.console import ConsoleObserver
from finetune.progress import Checkpoint, Level, Metrics, TrainingStopped
from finetune.training import (
    TrainingError,
    TrainingResult,
    hold_out,
    load_conversations,
    resume_checkpoint,
    train,
    training_chat_template,
)

pytestmark = pytest.mark.model

CONVERSATIONS: list[list[dict[str, str]]] = [
    [
        {"role": "user", "content": "Where is my order 1042?"},
        {"role": "assistant", "content": "Order 1042 shipped on Monday and arrives Thursday."},
    ],
    [
        {"role": "user", "content": "How do I reset my password?"},
        {
            "role": "assistant",
            "content": "Choose 'Forgot password' on the sign-in page and follow the email.",
        },
    ],
    [
        {"role": "system", "content": "You are Kestrelmoor's support agent. Be brief."},
        {"role": "user", "content": "Can I return boots I wore once?"},
        {"role": "assistant", "content": "Yes, within 30 days, if they are clean and in the box."},
    ],
    [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help you today?"},
        {"role": "user", "content": "When will my refund arrive?"},
        {"role": "assistant", "content": "Refunds reach your card within five business days."},
    ],
    [
        {"role": "user", "content": "Do you ship to Canada?"},
        {"role": "assistant", "content": "Yes, Canadian orders arrive in 4 to 7 days."},
    ],
    [
        {"role": "user", "content": "My parcel arrived damaged."},
        {"role": "assistant", "content": "Sorry about that! Send a photo and we will ship a new one."},
        {"role": "user", "content": "Where do I send it?"},
        {"role": "assistant", "content": "Reply to your order email with the photo attached."},
    ],
    [
        {"role": "user", "content": "Can I change my delivery address?"},
        {"role": "assistant", "content": "Yes, until the order ships: open it under My orders."},
    ],
    [
        {"role": "user", "content": "Is there a student discount?"},
        {"role": "assistant", "content": "Students get 10% off with a verified school email."},
    ],
    [
        {"role": "user", "content": "How do I cancel my order?"},
        {"role": "assistant", "content": "Open My orders and choose Cancel before it ships."},
    ],
    [
        {"role": "user", "content": "What are your opening hours?"},
        {"role": "assistant", "content": "Support is open 8am to 8pm, Monday to Saturday."},
    ],
    [
        {"role": "user", "content": "Do gift cards expire?"},
        {"role": "assistant", "content": "No, Kestrelmoor gift cards never expire."},
    ],
    [
        {"role": "user", "content": "I was charged twice."},
        {"role": "assistant", "content": "I am sorry! The duplicate charge is refunded within 48 hours."},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "You're welcome. Anything else?"},
    ],
]
EPOCHS = 2
STEPS_PER_EPOCH = 3  # 12 examples, 2 held out (validation_split 0.15), batch 4


@dataclass
class Recorder:
    """An observer that keeps everything it is told; stops when ``stop_when`` says so."""

    stop_when: Any = None
    messages: list[tuple[str, Level]] = field(default_factory=list)
    events: list[Metrics] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)

    def message(self, text: str, level: Level = "info") -> None:
        self.messages.append((text, level))

    def metrics(self, metrics: Metrics) -> None:
        self.events.append(metrics)

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        self.checkpoints.append(checkpoint)

    def should_stop(self) -> bool:
        return bool(self.stop_when and self.stop_when(self))

    @property
    def train_events(self) -> list[Metrics]:
        return [m for m in self.events if m.train_loss is not None]

    @property
    def eval_events(self) -> list[Metrics]:
        return [m for m in self.events if m.eval_loss is not None]


@dataclass
class Run:
    config: TrainingConfig
    observer: Recorder
    result: TrainingResult


@pytest.fixture(scope="module")
def base_model() -> str:
    settings = Settings()
    return resolve_model_dir(settings.model.path, settings.cache_dir)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "support.jsonl"
    path.write_text("\n".join(json.dumps({"messages": c}) for c in CONVERSATIONS) + "\n")
    return path


def make_config(base_model: str, data_file: Path, output_dir: Path, **overrides: Any) -> TrainingConfig:
    # No LoRA dropout: a resumed run then retraces the uninterrupted one exactly (see the resume test).
    hyperparameters = {
        "n_epochs": EPOCHS,
        "batch_size": 4,
        "learning_rate_multiplier": 2.5,
        "lora_r": 8,
        "lora_dropout": 0.0,
    }
    hyperparameters.update(overrides.pop("hyperparameters", {}))
    values: dict[str, Any] = {"validation_split": 0.15, "max_seq_length": 128, "seed": 7, **overrides}
    return TrainingConfig(
        base_model=base_model,
        training_file=data_file,
        output_dir=output_dir,
        hyperparameters=Hyperparameters(**hyperparameters),
        **values,
    )


@pytest.fixture(scope="module")
def qlora(base_model: str, data_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    config = make_config(base_model, data_file, tmp_path_factory.mktemp("qlora"))
    observer = Recorder()
    return Run(config, observer, train(config, observer))


@pytest.fixture(scope="module")
def resumed(
    base_model: str, data_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Recorder, Run]:
    """The QLoRA run again, stopped once the first epoch's checkpoint is written, then run on the same dir."""
    config = make_config(base_model, data_file, tmp_path_factory.mktemp("resume"))
    first = Recorder(stop_when=lambda recorder: bool(recorder.checkpoints))
    with pytest.raises(TrainingStopped):
        train(config, first)
    second = Recorder()
    return first, Run(config, second, train(config, second))


def test_qlora_run_trains_with_finite_falling_loss(qlora: Run) -> None:
    steps = [m.step for m in qlora.observer.train_events]
    assert steps == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    assert all(m.total_steps == EPOCHS * STEPS_PER_EPOCH for m in qlora.observer.events)
    losses = [m.train_loss for m in qlora.observer.train_events]
    assert all(loss is not None and math.isfinite(loss) for loss in losses)
    eval_losses = [m.eval_loss for m in qlora.observer.eval_events]
    assert len(eval_losses) == EPOCHS and all(
        loss is not None and math.isfinite(loss) for loss in eval_losses
    )
    assert eval_losses[-1] < eval_losses[0]  # type: ignore[operator]
    assert qlora.result.final.step == EPOCHS * STEPS_PER_EPOCH
    assert qlora.result.final.eval_loss == eval_losses[-1]


def test_metrics_carry_throughput_accuracy_and_learning_rate(qlora: Run) -> None:
    for metrics in qlora.observer.train_events:
        assert metrics.tokens_per_second is not None and metrics.tokens_per_second > 0
        assert metrics.learning_rate is not None and metrics.learning_rate > 0
        assert metrics.mean_token_accuracy is not None and 0 <= metrics.mean_token_accuracy <= 1
    assert [m.epoch for m in qlora.observer.eval_events] == [1.0, 2.0]
    assert qlora.result.trained_tokens > 0


def test_one_checkpoint_per_epoch(qlora: Run) -> None:
    expected = [STEPS_PER_EPOCH * epoch for epoch in range(1, EPOCHS + 1)]
    assert [c.step for c in qlora.observer.checkpoints] == expected
    on_disk = sorted(p.name for p in qlora.config.output_dir.glob("checkpoint-*"))
    assert on_disk == sorted(f"checkpoint-{step}" for step in expected)
    for checkpoint in qlora.observer.checkpoints:
        assert checkpoint.path.is_dir() and checkpoint.metrics.eval_loss is not None


def test_the_adapter_learnt_something(qlora: Run) -> None:
    weights = load_file(qlora.result.adapter_dir / "adapter_model.safetensors")
    lora_b = {name: tensor for name, tensor in weights.items() if "lora_B" in name}
    assert lora_b, sorted(weights)[:5]
    # LoRA starts with B = 0 (the adapter is a no-op); every B trained away from it.
    assert all(tensor.abs().sum() > 0 for tensor in lora_b.values())


def test_the_merged_model_loads_and_generates(qlora: Run, base_model: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged_dir = qlora.result.merged_dir
    assert (merged_dir / "model.safetensors").is_file() and (merged_dir / "generation_config.json").is_file()
    assert not merged_dir.with_name("merged.partial").exists()
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    assert "{% generation %}" not in tokenizer.chat_template  # the served template is the original
    model: Any = AutoModelForCausalLM.from_pretrained(merged_dir)
    base = AutoModelForCausalLM.from_pretrained(base_model)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(model.state_dict()[name], base.state_dict()[name])

    prompt: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Do gift cards expire?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    answer: Any = tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answer.strip()


def test_stopped_after_the_first_checkpoint_resumes_from_it(
    resumed: tuple[Recorder, Run], qlora: Run
) -> None:
    first, run = resumed
    assert [c.step for c in first.checkpoints] == [STEPS_PER_EPOCH]
    assert max(m.step for m in first.events) == STEPS_PER_EPOCH + 1  # stopped after the step it was asked at
    assert not (run.config.output_dir / "adapter.partial").exists()

    texts = [text for text, _ in run.observer.messages]
    assert any(f"resuming from checkpoint-{STEPS_PER_EPOCH}" in text for text in texts), texts
    assert [m.step for m in run.observer.train_events] == list(
        range(STEPS_PER_EPOCH + 1, EPOCHS * STEPS_PER_EPOCH + 1)
    )
    assert [c.step for c in run.observer.checkpoints] == [EPOCHS * STEPS_PER_EPOCH]
    assert run.result.final.step == run.result.final.total_steps == EPOCHS * STEPS_PER_EPOCH
    # Tokens of the epoch trained before the stop count too: the same as the uninterrupted run's.
    assert run.result.trained_tokens == qlora.result.trained_tokens
    # Weights, optimizer, schedule and data order came back: epoch 2 retraces the uninterrupted run's. Not
    # to the bit: bitsandbytes repacks 4-bit weights for its CPU kernels on the first evaluation, which the
    # uninterrupted run did before epoch 2 and the resumed one did not (plain LoRA resumes bit-exact).
    twins = {m.step: m for m in qlora.observer.train_events}
    for metrics in run.observer.train_events:
        assert metrics.learning_rate == twins[metrics.step].learning_rate
        assert metrics.train_loss == pytest.approx(twins[metrics.step].train_loss, rel=5e-3)
    resumed_weights = load_file(run.result.adapter_dir / "adapter_model.safetensors")
    uninterrupted = load_file(qlora.result.adapter_dir / "adapter_model.safetensors")
    assert resumed_weights.keys() == uninterrupted.keys()
    for name, weight in uninterrupted.items():  # an epoch moves them by ~25%
        difference = (resumed_weights[name].float() - weight.float()).norm() / weight.float().norm()
        assert difference < 0.05, name
    assert (run.result.merged_dir / "model.safetensors").is_file()


def test_should_stop_ends_training_after_that_step(base_model: str, tmp_path: Path) -> None:
    # One more conversation whose prompt fills max_seq_length: it is skipped, with a warning.
    long_prompt = [
        {"role": "user", "content": "Please read my whole order history first. " * 30},
        {"role": "assistant", "content": "Done."},
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"messages": c}) for c in [*CONVERSATIONS, long_prompt]))
    config = make_config(
        base_model, data, tmp_path / "run", validation_split=0, hyperparameters={"quantization": "none"}
    )
    observer = Recorder(stop_when=lambda recorder: True)
    with pytest.raises(TrainingStopped):
        train(config, observer)
    assert [m.step for m in observer.events] == [1]
    assert not observer.checkpoints and not list(config.output_dir.glob("checkpoint-*"))
    assert not (config.output_dir / "adapter").exists()
    warning = "1 of 13 training examples have no assistant token within max_seq_length=128 and are skipped"
    assert (warning, "warn") in observer.messages


def test_no_assistant_token_within_max_seq_length_is_an_error(
    base_model: str, data_file: Path, tmp_path: Path
) -> None:
    # 16 tokens hold the system prompt's start at most: every assistant turn is cut off.
    config = make_config(
        base_model, data_file, tmp_path / "run", max_seq_length=16, hyperparameters={"quantization": "none"}
    )
    with pytest.raises(TrainingError, match=r"no training example has an assistant token.*max_seq_length=16"):
        train(config, Recorder())


def test_the_training_template_renders_like_the_original_and_marks_assistant_turns(base_model: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    marked = training_chat_template(tokenizer)
    for conversation in CONVERSATIONS:
        assert tokenizer.apply_chat_template(conversation, tokenize=False) == tokenizer.apply_chat_template(
            conversation, tokenize=False, chat_template=marked
        )
    conversation = CONVERSATIONS[3]
    encoded: Any = tokenizer.apply_chat_template(
        conversation, chat_template=marked, return_dict=True, return_assistant_tokens_mask=True
    )
    trained = [
        token for token, mask in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True) if mask
    ]
    expected = "".join(m["content"] + "<|im_end|>" for m in conversation if m["role"] == "assistant")
    assert tokenizer.decode(trained) == expected  # every assistant turn, with its stop token; nothing else


def test_bad_lines_are_training_errors_that_name_the_line(tmp_path: Path) -> None:
    cases = {
        "not json": "not valid JSON",
        json.dumps({"prompt": "hi"}): "'messages'",
        json.dumps({"messages": [{"role": "bot", "content": "hi"}]}): "role must be one of",
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}): "no assistant message",
    }
    for line, error in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps({"messages": CONVERSATIONS[0]}) + "\n\n" + line + "\n")
        with pytest.raises(TrainingError, match=f"bad.jsonl line 3: .*{error}"):
            load_conversations(path)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(TrainingError, match="no examples"):
        load_conversations(tmp_path / "empty.jsonl")


def test_hold_out_is_seeded_and_keeps_at_least_one_on_each_side() -> None:
    examples = [[{"role": "user", "content": str(i)}] for i in range(10)]
    training, validation = hold_out(examples, 0.2, seed=1)
    assert len(validation) == 2 and len(training) == 8
    assert hold_out(examples, 0.2, seed=1) == (training, validation)
    assert hold_out(examples, 0.2, seed=2) != (training, validation)
    assert [len(part) for part in hold_out(examples[:2], 0.01, seed=1)] == [1, 1]
    assert [len(part) for part in hold_out(examples[:2], 0.99, seed=1)] == [1, 1]
    assert hold_out(examples[:1], 0.5, seed=1) == (examples[:1], [])
    assert hold_out(examples, 0.0, seed=1) == (examples, [])


def test_resume_point_is_the_latest_complete_checkpoint(tmp_path: Path) -> None:
    assert resume_checkpoint(tmp_path / "missing", Recorder()) is None
    for step, complete in ((3, True), (12, True), (15, False)):
        checkpoint = tmp_path / f"checkpoint-{step}"
        checkpoint.mkdir()
        if complete:
            (checkpoint / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-notes").mkdir()
    observer = Recorder()
    assert resume_checkpoint(tmp_path, observer) == tmp_path / "checkpoint-12"  # by step, not by name
    assert observer.messages == [("removing incomplete checkpoint checkpoint-15", "warn")]
    assert not (tmp_path / "checkpoint-15").exists()


def test_console_observer_draws_progress_and_stops_only_when_interrupted() -> None:
    out = io.StringIO()
    with ConsoleObserver(out, handle_interrupt=False) as observer:
        observer.message("loading")
        observer.metrics(Metrics(step=1, total_steps=4, epoch=0.25, train_loss=2.5, tokens_per_second=120.0))
        observer.metrics(Metrics(step=2, total_steps=4, epoch=0.5, eval_loss=2.25))
        assert not observer.should_stop()
        observer.interrupt()
        assert observer.should_stop()
    text = out.getvalue()
    assert "loading" in text and "2/4" in text and "loss=2.5000" in text and "tok/s=120" in text
    assert "eval loss 2.2500" in text and "stopping after this step" in text


def test_gradients_still_reach_the_first_layer_after_an_evaluation(base_model: str) -> None:
    """bitsandbytes repacks 4-bit weights for CPU inference after an eval-mode pass, and the repacked
    kernel has no backward; training after the per-epoch evaluation must still reach every layer."""
    from peft import get_peft_model

    from finetune.training import _lora_config, load_base_model

    hyperparameters = Hyperparameters(lora_r=8)
    model = get_peft_model(load_base_model(base_model, hyperparameters), _lora_config(hyperparameters))
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    first = dict(model.named_parameters())[
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"
    ]
    assert first.grad is not None and first.grad.abs().sum() > 0
