"""Policy files: the shipped default is valid, bad fields are named, named policies load."""

from __future__ import annotations

from pathlib import Path

import pytest

from safety.findings import Finding
from safety.policy import DEFAULT_POLICY_FILE, Policy, PolicyError, load_policies, load_policy


def test_the_shipped_default_equals_the_built_in_default() -> None:
    assert load_policy(DEFAULT_POLICY_FILE).model_dump(exclude={"name"}) == Policy().model_dump(
        exclude={"name"}
    )


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ('[lexicon.actions]\nhate = "nuke"\n', "lexicon.actions.hate"),
        ("[pii]\nenabled = 3\n", "pii.enabled"),
        ("[semantic]\ninjection_threshold = 1.5\n", "semantic.injection_threshold"),
        ('[lexicon.actions]\nspam = "block"\n', "lexicon.actions.spam"),
        ('[responses]\non_blocked_input = "shrug"\n', "responses.on_blocked_input"),
        ("[injection\n", "cannot read"),
    ],
)
def test_bad_policy_names_the_field(tmp_path: Path, content: str, named: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(PolicyError, match=named.replace(".", r"\.")) as caught:
        load_policy(path)
    assert str(path) in str(caught.value)


def test_named_policies_from_a_directory(tmp_path: Path) -> None:
    (tmp_path / "strict.toml").write_text(
        '[responses]\non_blocked_input = "error"\n[lexicon.actions]\nprofanity = "block"\n'
    )
    policies = load_policies(DEFAULT_POLICY_FILE, tmp_path)
    assert set(policies) == {"default", "strict"}
    assert policies["strict"].responses.on_blocked_input == "error"
    assert policies["strict"].lexicon.actions.profanity == "block"
    assert policies["strict"].lexicon.actions.hate == "block"  # unspecified fields keep their defaults


def test_action_for_follows_the_policy_and_its_switches() -> None:
    swear = Finding("lexicon", "profanity", "profanity:en:1", 0, 4)
    email = Finding("pii", "email", "pii:email", 0, 9)
    semantic = Finding("injection", "semantic_injection", "semantic:injection", 0, 9, 0.9)
    policy = Policy()
    assert policy.action_for(swear) == "mask"
    assert policy.action_for(email) == "mask"
    assert policy.action_for(semantic) == "block"
    off = Policy.model_validate({"lexicon": {"enabled": False}, "semantic": {"action": "flag"}})
    assert off.action_for(swear) == "allow"
    assert off.action_for(semantic) == "flag"
