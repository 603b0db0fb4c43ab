"""Validation of dataset and probe keys.

Keys name registry entries, Dagster partitions, folders of artifacts and values in DuckDB, so one
allow-list guards all of those uses: a key is 1 to 63 characters, lowercase ASCII letters, digits,
`_` and `-`, starting with a letter or digit. That excludes everything that could escape a path
(`.`, `/`, `\\`), break a partition key (`|`, `,`, brackets) or a SQL literal (quotes), and
whitespace or control characters that hide in logs.
"""

from __future__ import annotations

import re

KEY_RULE = (
    "1 to 63 characters: lowercase letters a-z, digits 0-9, '_' and '-', starting with a letter or digit"
)
_KEY_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


class InvalidKeyError(ValueError):
    """A dataset or probe key breaks the allow-list rule."""


def validate_key(key: object, what: str = "dataset") -> str:
    """Return `key` unchanged when it is a valid `what` key, else raise `InvalidKeyError`.

    The message names the key (by repr, so hidden characters show) and the rule to follow.
    """
    if not isinstance(key, str):
        raise InvalidKeyError(
            f"invalid {what} key {key!r}: expected a string, got {type(key).__name__}; "
            f"a key is {KEY_RULE} (quote it in YAML if it looks like a number)"
        )
    if _KEY_RE.fullmatch(key) is None:
        raise InvalidKeyError(f"invalid {what} key {key!r}: a key is {KEY_RULE}")
    return key
