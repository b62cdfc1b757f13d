"""The README stays true: its configuration table and its test command are the code's."""

from __future__ import annotations

import re
from pathlib import Path

from assistant.config_table import render

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_configuration_table_matches_the_settings() -> None:
    table = re.search(r"<!-- config-table:start -->\n(.*?)\n<!-- config-table:end -->", README, re.S)
    assert table is not None
    assert table.group(1).strip() == render().strip(), (
        "run `assistant config-table` and paste it in the README"
    )


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    setup = README.split("## Set-up: two commands", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^(make \w+)", setup.split("```sh", 1)[1].split("```", 1)[0], re.M)
    assert commands == ["make serve", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)


def test_modelfile_points_at_the_installed_gguf() -> None:
    modelfile = (ROOT / "Modelfile").read_text()
    source = re.search(r"^FROM (\S+)$", modelfile, re.M)
    assert source is not None
    assert (ROOT / source.group(1)).resolve().is_file(), "run `make install` to link the default model"
    assert "PARAMETER temperature 0.3" in modelfile
