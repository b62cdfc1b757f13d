"""Safety policies: which checks run, their thresholds and what happens on a finding.

A policy is a TOML file validated field by field; unknown or bad fields raise ``PolicyError`` naming
the field (``lexicon.actions.hate: Input should be 'block', 'mask', 'flag' or 'allow'``).
The default policy ships as ``safety/policies/default.toml``.

Raises ``PolicyError``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safety.findings import Action, Finding

DEFAULT_POLICY_FILE = Path(__file__).parent / "policies" / "default.toml"


class PolicyError(Exception):
    """A policy file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LexiconActions(_Strict):
    profanity: Action = "mask"
    hate: Action = "block"
    sexual: Action = "block"
    self_harm: Action = "block"
    violence: Action = "block"
    weapons: Action = "block"
    extremism: Action = "block"


class LexiconPolicy(_Strict):
    enabled: bool = True
    actions: LexiconActions = LexiconActions()


class PiiActions(_Strict):
    """On input, "mask" swaps the value for a placeholder that the answer gets back; on output it masks."""

    email: Action = "mask"
    phone: Action = "mask"
    card: Action = "mask"
    iban: Action = "mask"
    cn_id: Action = "mask"
    ip: Action = "mask"
    secret: Action = "mask"


class PiiPolicy(_Strict):
    enabled: bool = True
    actions: PiiActions = PiiActions()


class InjectionPolicy(_Strict):
    enabled: bool = True
    action: Action = "block"


class SemanticPolicy(_Strict):
    enabled: bool = True
    injection_threshold: float = Field(0.5, ge=0, le=1)
    harmful_threshold: float = Field(0.5, ge=0, le=1)
    action: Action = "block"


class SystemPromptPolicy(_Strict):
    enabled: bool = True
    action: Action = "block"


class ResponsesPolicy(_Strict):
    #: "error": an OpenAI-style 400 with code content_filter; "refusal": a polite canned answer.
    on_blocked_input: Literal["error", "refusal"] = "refusal"
    refusal_message: str = Field(
        "I'm sorry, but I can't help with that. Is there anything else I can do for you?", min_length=1
    )
    #: Sent as the last text of a stream cut because the answer was blocked.
    blocked_output_message: str = Field(" [answer withheld by the content filter]", min_length=1)


class Policy(_Strict):
    name: str = "default"
    lexicon: LexiconPolicy = LexiconPolicy()
    pii: PiiPolicy = PiiPolicy()
    injection: InjectionPolicy = InjectionPolicy()
    semantic: SemanticPolicy = SemanticPolicy()
    system_prompt: SystemPromptPolicy = SystemPromptPolicy()
    responses: ResponsesPolicy = ResponsesPolicy()

    def action_for(self, finding: Finding) -> Action:
        match finding.check:
            case "lexicon":
                enabled, action = (
                    self.lexicon.enabled,
                    getattr(self.lexicon.actions, finding.category, "block"),
                )
            case "pii":
                enabled, action = self.pii.enabled, getattr(self.pii.actions, finding.category, "mask")
            case "injection" if finding.rule.startswith("semantic"):
                enabled, action = self.semantic.enabled, self.semantic.action
            case "injection":
                enabled, action = self.injection.enabled, self.injection.action
            case "harmful":
                enabled, action = self.semantic.enabled, self.semantic.action
            case "system_prompt":
                enabled, action = self.system_prompt.enabled, self.system_prompt.action
        return cast(Action, action) if enabled else "allow"


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file; its name defaults to the file's stem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read the policy: {exc}") from exc
    data.setdefault("name", path.stem)
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise PolicyError(f"{path}: {problems}") from exc


def load_policies(default_file: Path, extra_dir: Path | None) -> dict[str, Policy]:
    """The default policy (as "default") plus every ``*.toml`` in ``extra_dir``, named by file stem."""
    policies = {"default": load_policy(default_file).model_copy(update={"name": "default"})}
    for path in sorted(extra_dir.glob("*.toml")) if extra_dir else []:
        policy = load_policy(path)
        policies[policy.name] = policy
    return policies
