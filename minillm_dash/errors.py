"""Exception types shared by every layer: user-fixable problems carry a message shown verbatim."""

from __future__ import annotations


class UserInputError(ValueError):
    """Something the user can fix (bad file, bad config, unreachable model); the message says what."""


class DatasetError(UserInputError):
    """A dataset was rejected; names the file, the 1-based line or row, and the field."""

    def __init__(self, message: str, *, file: str, line: int | None = None, field: str | None = None):
        self.file = file
        self.line = line
        self.field = field
        self.reason = message
        where = [file]
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {message}")


class ConfigError(UserInputError):
    """A run or variant configuration was refused; `field` names the offending setting."""

    def __init__(self, message: str, *, field: str | None = None):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class ModelLoadError(UserInputError):
    """A model could not be found, loaded or checked."""


class VocabularyMismatchError(ModelLoadError):
    """Teacher and student do not share one vocabulary and tokenizer."""


def reject_unknown_keys(data: dict, known: set[str], *, what: str, field: str) -> None:
    """Refuse misspelt settings instead of silently ignoring them."""
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what} {unknown}; known: {sorted(known)}", field=field)
