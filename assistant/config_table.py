"""The README's configuration table, generated from the settings classes so it cannot drift."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from assistant.settings import Settings


def _default(value: object) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, Path) and value.is_absolute():
        return f"`~/{value.relative_to(Path.home())}`" if value.is_relative_to(Path.home()) else f"`{value}`"
    return f"`{value}`"


def rows(model: type[BaseModel], prefix: str = "ASSISTANT_", dotted: str = "") -> list[str]:
    lines: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines += rows(annotation, f"{prefix}{name.upper()}__", f"{dotted}{name}.")
            continue
        description = (field.description or "").replace("|", "\\|")
        default = _default(field.get_default(call_default_factory=True))
        lines.append(f"| `{dotted}{name}` | `{prefix}{name.upper()}` | {default} | {description} |")
    return lines


def render() -> str:
    header = ["| Setting | Environment variable | Default | Meaning |", "| --- | --- | --- | --- |"]
    return "\n".join(header + rows(Settings))
