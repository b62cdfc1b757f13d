"""What every check reports: findings with a span in the text that was checked.

A check never decides what happens to the text: the policy maps (check, category) to an action.
A finding never carries the matched text itself (it may be PII); ``rule`` names the rule or term id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["block", "mask", "flag", "allow"]
Direction = Literal["input", "output"]
Check = Literal["lexicon", "pii", "injection", "harmful", "system_prompt"]


@dataclass(frozen=True)
class Finding:
    check: Check
    category: str  # e.g. "profanity", "email", "ignore_instructions"
    rule: str  # which rule or lexicon entry fired (an id, never the matched text)
    start: int  # span in the checked text, in characters of the original string
    end: int
    score: float = 1.0  # 1.0 for rules; a similarity or probability for semantic checks
