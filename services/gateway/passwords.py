"""Password policy: what a person may choose as a password.

Rules, in the order a person reads the messages:

* at least :data:`MIN_LENGTH` characters once surrounding whitespace is ignored (twelve
  spaces are not a password), and not one character repeated;
* not containing the account's email, the email's local part, or the name or slug of the
  tenant (compared case-insensitively, ignoring punctuation and spaces: ``Acme-Service``
  contains the tenant "Acme Service"). Fragments shorter than :data:`MIN_FRAGMENT` are not
  compared on their own (a three-letter shop name occurs inside ordinary words), but they
  still count against the password in the strength estimate below;
* not common or guessable.

"Common or guessable" is decided by `zxcvbn <https://github.com/dwolfhub/zxcvbn-python>`_
(pinned in pyproject.toml), the maintained Python port of Dropbox's offline strength
estimator, rather than by a bundled list of common passwords. A list only catches exact
entries ("password123" but not "Password1234!"); zxcvbn also scores dictionary words with
substitutions, keyboard walks, dates, repeats and sequences, and is given the email and
tenant names as words an attacker would try first. It is pure Python, offline, a 400 kB
wheel (1.7 MB installed, with its own frequency lists), needs nothing else and supports
Python 3.11. It is imported on first use only, so processes that never check a password
do not pay its ~14 MB of lists. A password needs a score of at least :data:`MIN_SCORE`
(3: "safely unguessable", about 10^10 guesses for an offline attack on a slow hash).
zxcvbn refuses inputs over 72 characters and its cost grows with length; a longer
password is judged on its first 72 characters, which is only ever stricter.

:func:`check_password` returns the problems as sentences; :func:`require_password` raises
the API's ``validation_failed`` error with them under ``password``. Pure: no I/O.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Any

from kit.errors import ValidationFailed

__all__ = ["MIN_LENGTH", "MIN_SCORE", "check_password", "require_password"]

MIN_LENGTH = 12
MIN_SCORE = 3
MIN_FRAGMENT = 4
# zxcvbn raises ValueError beyond this many characters (its own default max_length).
ESTIMATOR_MAX_LENGTH = 72

TOO_SHORT = f"Use at least {MIN_LENGTH} characters (spaces at either end do not count)."
ONE_CHARACTER = "Use more than one repeated character."
CONTAINS_EMAIL = "Do not use your email address or its name part in the password."
CONTAINS_TENANT = "Do not use the shop's name in the password."
GUESSABLE = "This password is too common or easy to guess."


def _compact(value: str) -> str:
    """Lowercase letters and digits only: the form in which fragments are compared."""
    folded = unicodedata.normalize("NFKC", value).casefold()
    return "".join(ch for ch in folded if ch.isalnum())


def _fragments(values: Iterable[str]) -> list[str]:
    compacted = (_compact(v) for v in values if v)
    return [c for c in dict.fromkeys(compacted) if len(c) >= MIN_FRAGMENT]


def _estimate(password: str, user_inputs: list[str]) -> tuple[int, str]:
    """(score 0..4, zxcvbn's warning or ""). Imported lazily: see the module docstring."""
    from zxcvbn import zxcvbn

    result: dict[str, Any] = zxcvbn(password[:ESTIMATOR_MAX_LENGTH], user_inputs=user_inputs)
    warning = result.get("feedback", {}).get("warning") or ""
    return int(result["score"]), str(warning)


def check_password(
    password: str, *, email: str = "", tenant_names: Iterable[str] = ()
) -> list[str]:
    """Why ``password`` is not acceptable, as sentences for a person; empty when it is.

    ``email`` is the account's address; ``tenant_names`` the tenant's name and slug (any
    number of names the password must not contain).
    """
    core = password.strip()
    if not core:
        return [TOO_SHORT]
    problems: list[str] = []
    if len(core) < MIN_LENGTH:
        problems.append(TOO_SHORT)
    if len(set(core)) == 1:
        problems.append(ONE_CHARACTER)

    email = email.strip()
    local_part = email.partition("@")[0] if "@" in email else ""
    tenant_names = [n for n in tenant_names if n and n.strip()]
    compact = _compact(password)
    if any(f in compact for f in _fragments([email, local_part])):
        problems.append(CONTAINS_EMAIL)
    if any(f in compact for f in _fragments(tenant_names)):
        problems.append(CONTAINS_TENANT)

    if not problems:
        # Only worth estimating once the plain rules pass; its message would repeat theirs.
        user_inputs = [v for v in (email, local_part, *tenant_names) if v]
        user_inputs += email.replace("@", " ").replace(".", " ").split()
        score, warning = _estimate(password, user_inputs)
        if score < MIN_SCORE:
            problems.append(f"{GUESSABLE} {warning}".strip() if warning else GUESSABLE)
    return problems


def require_password(password: str, *, email: str = "", tenant_names: Iterable[str] = ()) -> None:
    """Raise ``ValidationFailed`` (422, ``errors.password``) unless ``password`` passes."""
    problems = check_password(password, email=email, tenant_names=tenant_names)
    if problems:
        raise ValidationFailed("Choose a stronger password.", {"password": problems})
