"""``assistant finetune run CONFIG``: the job's training without the API or a worker."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from assistant.cli import main
from tests.finetune_helpers import domain_examples


def test_a_config_with_a_bad_field_is_refused_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('training_file = "x.jsonl"\noutput_dir = "out"\n[hyperparameters]\nn_epochs = -1\n')
    result = CliRunner().invoke(main, ["finetune", "run", str(config)])
    assert result.exit_code != 0 and "hyperparameters.n_epochs" in result.output


def test_finetune_run_trains_and_writes_a_servable_model(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_bytes(domain_examples(10))
    config = tmp_path / "run.json"
    config.write_text(
        json.dumps(
            {
                "training_file": str(tmp_path / "train.jsonl"),
                "output_dir": str(tmp_path / "run"),
                "validation_split": 0.2,
                "hyperparameters": {"n_epochs": 1, "batch_size": 4, "lora_r": 4, "quantization": "none"},
            }
        )
    )
    result = CliRunner().invoke(main, ["finetune", "run", str(config)])
    assert result.exit_code == 0, result.output
    assert "merged model:" in result.output
    merged = tmp_path / "run" / "merged"
    assert (merged / "config.json").is_file() and any(merged.glob("*.safetensors"))
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
