"""Settings a person writes (run config, site config, experiment grids): kebab-case keys, errors that name them."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import tomllib
from pydantic import BaseModel, ConfigDict, ValidationError


def kebab_case(name: str) -> str:
    """``local_steps`` → ``local-steps``: how every key is spelled on the wire and in files."""
    return name.replace("_", "-")


class KebabModel(BaseModel):
    """A frozen pydantic model read from kebab-case keys; unknown keys are refused."""

    model_config = ConfigDict(alias_generator=kebab_case, populate_by_name=True, extra="forbid", frozen=True)


def read_toml_file(path: Path) -> dict[str, Any]:
    """The document in a TOML file a person wrote.

    Raises:
        ValueError: the file cannot be read, or is not TOML; the message says which and why
            (callers put the file's role in front: ``site config PATH: ...``).
    """
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as error:
        raise ValueError(f"cannot read it ({error.strerror or error})") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"not valid TOML ({error})") from None


def known_keys(model: type[BaseModel]) -> list[str]:
    """The keys ``model`` accepts, as written (kebab-case aliases)."""
    return [field.alias or name for name, field in model.model_fields.items()]


def nearest_key(key: str, known: list[str]) -> str | None:
    """The known key ``key`` was most likely meant to be (``difflib``), or ``None``."""
    matches = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return matches[0] if matches else None


def describe_validation_error(error: ValidationError, whole: str, model: type[BaseModel] | None = None) -> str:
    """One line per problem, ``key: what is wrong (got value)``, joined by ``; ``.

    The offending value is shown for type and range errors; not for a missing key, for a
    check across several keys (whose "value" is the whole document) or for a section. An
    unknown key is named with the nearest key ``model`` knows, when one is close.

    Args:
        error: pydantic's error.
        whole: what to call a problem that belongs to no single key (``run config``).
        model: the model that raised it, for "did you mean" hints on unknown keys.
    """
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or whole
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            suggestion = nearest_key(str(item["loc"][-1]), known_keys(model)) if model and item["loc"] else None
            problems.append(f"{key}: unknown key" + (f" (did you mean {suggestion!r}?)" if suggestion else ""))
            continue
        shown = item["type"] not in ("value_error", "missing") and not isinstance(item.get("input"), dict)
        problems.append(f"{key}: {message}" + (f" (got {item['input']!r})" if shown else ""))
    return "; ".join(problems)
