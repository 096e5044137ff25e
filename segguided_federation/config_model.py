"""Settings a person writes (run config, site config, experiment grids): kebab-case keys, errors that name them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


def kebab_case(name: str) -> str:
    """``local_steps`` → ``local-steps``: how every key is spelled on the wire and in files."""
    return name.replace("_", "-")


class KebabModel(BaseModel):
    """A frozen pydantic model read from kebab-case keys; unknown keys are refused."""

    model_config = ConfigDict(alias_generator=kebab_case, populate_by_name=True, extra="forbid", frozen=True)


def describe_validation_error(error: ValidationError, whole: str) -> str:
    """One line per problem, ``key: what is wrong (got value)``, joined by ``; ``.

    The offending value is shown for type and range errors; not for a missing key, for a
    check across several keys (whose "value" is the whole document) or for a section.

    Args:
        error: pydantic's error.
        whole: what to call a problem that belongs to no single key (``run config``).
    """
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or whole
        message = item["msg"].removeprefix("Value error, ")
        shown = item["type"] not in ("value_error", "missing") and not isinstance(item.get("input"), dict)
        problems.append(f"{key}: {message}" + (f" (got {item['input']!r})" if shown else ""))
    return "; ".join(problems)
