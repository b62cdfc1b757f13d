"""The safety layer's entry points: check a message going in, filter an answer coming out.

Input (``Guard.check_input``): lexicon, PII, injection rules and, on the newest message, the semantic
detectors. PII set to "mask" becomes a placeholder from the request's ``PiiVault``, so the model never
sees it; the answer gets it back.

Output (``Guard.output_filter``): lexicon, PII and system-prompt leaks, checked while the answer
streams. Only the tail that could still turn into a finding is held back (each check says where that
tail starts: the last word, a number that may grow into a phone number, a run of the system prompt),
and never more than ``OUTPUT_HOLD_BACK`` characters: anything a check would block that is at most that
long never reaches the client, however the answer is split into chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from safety.findings import Action, Direction, Finding
from safety.injection import find_injection, system_prompt_scan
from safety.lexicon import Lexicon
from safety.normalize import normalize
from safety.pii import PiiVault, find_pii, pending_start
from safety.policy import Policy

if TYPE_CHECKING:
    from safety.semantic import SemanticDetector

#: Most characters of an answer held back while streaming (longer than any lexicon match, PII value or
#: leak window the output checks need to see whole); usually far fewer are (``OutputFilter``).
OUTPUT_HOLD_BACK = 64
EXCERPT_CONTEXT = 30


@dataclass(frozen=True)
class SafetyEvent:
    """One finding and what was done about it, with a redacted excerpt for the audit trail."""

    direction: Direction
    finding: Finding
    action: Action
    excerpt: str


@dataclass
class InputVerdict:
    text: str  # what the model may see: masked, PII replaced by placeholders
    blocked: bool
    events: list[SafetyEvent]


def redact_excerpt(text: str, finding: Finding) -> str:
    """Text around a finding, with the finding and all PII in view replaced by their category.

    PII is redacted in a wider window before the excerpt is cut, so a value cut in half at the
    excerpt's edge is still recognised and hidden.
    """
    margin = EXCERPT_CONTEXT + 100
    before = _redact_pii(text[max(0, finding.start - margin) : finding.start])
    after = _redact_pii(text[finding.end : finding.end + margin])
    left, right = before[-EXCERPT_CONTEXT:], after[:EXCERPT_CONTEXT]
    prefix = "…" if len(left) < finding.start else ""
    suffix = "…" if len(right) < len(text) - finding.end else ""
    return f"{prefix}{left}[{finding.category}]{right}{suffix}"


def _redact_pii(text: str) -> str:
    return apply_masks(text, find_pii(text))


def apply_masks(text: str, findings: list[Finding], vault: PiiVault | None = None) -> str:
    """Mask spans: terms become asterisks (same length), PII a vault placeholder or ``[CATEGORY]``."""
    pii = [f for f in findings if f.check == "pii"]
    for f in findings:
        if f.check != "pii":
            text = text[: f.start] + "*" * (f.end - f.start) + text[f.end :]
    if vault is not None:
        return vault.protect(text, pii)
    for f in sorted(pii, key=lambda f: f.start, reverse=True):
        text = text[: f.start] + f"[{f.category.upper()}]" + text[f.end :]
    return text


@dataclass
class Guard:
    lexicon: Lexicon
    semantic: SemanticDetector | None = None

    def findings(self, text: str, policy: Policy, *, semantic: bool) -> list[Finding]:
        found: list[Finding] = []
        if policy.lexicon.enabled:
            found += self.lexicon.find(text)
        if policy.pii.enabled:
            found += find_pii(text)
        if policy.injection.enabled:
            found += find_injection(text)
        if semantic and policy.semantic.enabled and self.semantic is not None:
            found += [f for f in self.semantic.find(text) if f.score >= _threshold(policy, f)]
        return found

    @property
    def ready(self) -> bool:
        """Whether the semantic model, if any, has loaded."""
        return self.semantic is None or self.semantic.loaded

    def check_input(
        self, text: str, policy: Policy, vault: PiiVault, *, semantic: bool = True
    ) -> InputVerdict:
        events = _events("input", text, self.findings(text, policy, semantic=semantic), policy)
        blocked = any(e.action == "block" for e in events)
        masked = _non_overlapping([e.finding for e in events if e.action == "mask"])
        return InputVerdict(apply_masks(text, masked, vault), blocked, events)

    def output_filter(self, policy: Policy, system_prompt: str) -> OutputFilter:
        return OutputFilter(self, policy, system_prompt)


def _threshold(policy: Policy, finding: Finding) -> float:
    semantic = policy.semantic
    return semantic.injection_threshold if finding.check == "injection" else semantic.harmful_threshold


def _non_overlapping(findings: list[Finding]) -> list[Finding]:
    kept: list[Finding] = []
    for finding in sorted(findings, key=lambda f: (f.start, f.start - f.end)):
        if not kept or finding.start >= kept[-1].end:
            kept.append(finding)
    return kept


def _events(direction: Direction, text: str, findings: list[Finding], policy: Policy) -> list[SafetyEvent]:
    events = []
    for finding in findings:
        action = policy.action_for(finding)
        if action != "allow":
            events.append(SafetyEvent(direction, finding, action, redact_excerpt(text, finding)))
    return events


@dataclass
class OutputFilter:
    """Checks an answer piece by piece; ``blocked`` turns true when the answer must be cut."""

    guard: Guard
    policy: Policy
    system_prompt: str
    blocked: bool = False
    events: list[SafetyEvent] = field(default_factory=list)
    _context: str = ""  # already released text, kept so a check sees across the release point
    _buffer: str = ""

    def feed(self, piece: str) -> str:
        self._buffer += piece
        return self._release(final=False)

    def flush(self) -> str:
        return self._release(final=True)

    def _scan(self, window: str) -> tuple[list[Finding], int]:
        """The findings in ``window``, and where the tail that may still turn into one begins
        (``len(window)``: none does). The window is normalized once for every check."""
        found: list[Finding] = []
        starts = [len(window)]
        normalized = normalize(window)
        if self.policy.lexicon.enabled:
            terms, start = self.guard.lexicon.scan(window, normalized)
            found += terms
            starts.append(start)
        if self.policy.pii.enabled:
            found += find_pii(window)
            starts.append(pending_start(window))
        if self.policy.system_prompt.enabled and self.system_prompt:
            leak, start = system_prompt_scan(window, self.system_prompt, normalized)
            found += [leak] if leak else []
            starts.append(start)
        return found, min(starts)

    def _release(self, *, final: bool) -> str:
        if self.blocked:
            return ""
        offset = len(self._context)
        window = self._context + self._buffer
        found, pending_from = self._scan(window)
        acted = [(f, self.policy.action_for(f)) for f in found if f.end > offset]
        acted = [(f, a) for f, a in acted if a != "allow"]
        held = max(len(window) - OUTPUT_HOLD_BACK, pending_from)
        cut = len(window) if final else max(offset, held)
        # A finding that reaches the end of what has arrived, or lies in the tail that may still change,
        # may yet turn into an innocent word ("spic" + "y", "spic" + " and span"): it is held back, and
        # judged when more text (or the end) comes.
        pending = [f for f, _ in acted if not final and (f.end >= len(window) or f.start >= held)]
        acted = [(f, a) for f, a in acted if f not in pending]
        cut = min([cut, *(max(offset, f.start) for f in pending)])
        if blocking := [f.start for f, a in acted if a == "block"]:
            self.blocked = True
            cut = max(offset, min(blocking))  # the checked text before the first block still goes out
        for f, a in acted:  # a span is released whole, never cut in two
            if a != "block" and f.start < cut < f.end:
                cut = max(offset, f.start)
        done = [(f, a) for f, a in acted if f.start < cut or a == "block"]
        self.events += [SafetyEvent("output", f, a, redact_excerpt(window, f)) for f, a in done]
        masks = _non_overlapping([_shift(f, offset) for f, a in done if a == "mask"])
        self._context = window[max(0, cut - OUTPUT_HOLD_BACK) : cut]
        self._buffer = window[cut:]
        return apply_masks(window[offset:cut], masks)


def _shift(finding: Finding, offset: int) -> Finding:
    start = max(finding.start, offset) - offset
    return Finding(finding.check, finding.category, finding.rule, start, finding.end - offset, finding.score)
