"""Access tokens (EdDSA JWTs), password hashing and refresh-token helpers for the gateway.

Pure library code: no database, no nameko. Refresh-token rotation and reuse detection
live with the session store; this module only mints and hashes the opaque values.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar, cast

import eventlet.semaphore
import greenlet
import jwt
from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from eventlet import tpool
from eventlet.patcher import original

from kit.config import ConfigError, env_text

__all__ = [
    "ConfigError",
    "KeyRing",
    "TokenError",
    "TokenService",
    "dummy_verify",
    "hash_password",
    "hash_refresh_token",
    "needs_rehash",
    "new_refresh_token",
    "verify_password",
]

ALGORITHM = "EdDSA"
DEFAULT_DEV_KEY_FILE = "var/keys/dev-ed25519.pem"
T = TypeVar("T")
# Far larger than any token we issue; refusing early bounds the work an attacker can cause.
MAX_TOKEN_LENGTH = 8192


class TokenError(Exception):
    """A token was refused. ``code`` is safe to return to clients; ``detail`` is short."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


# --- keys ------------------------------------------------------------------------------------


def _load_private_key(pem: str, label: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        # Never echo the PEM (or cryptography's message about it) into logs.
        raise ConfigError(f"{label}: not a readable unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{label}: key is not Ed25519")
    return key


def _fingerprint_kid(key: Ed25519PrivateKey) -> str:
    # Derived from the public key so every process loading the same key agrees on the kid.
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _private_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _load_or_create_dev_key(path: Path) -> Ed25519PrivateKey:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Write to a private temp file, then hard-link it into place: link() fails if another
        # process won the race, so every process ends up reading one complete key file.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(_private_pem(Ed25519PrivateKey.generate()))
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return _load_private_key(path.read_text(), str(path))


class KeyRing:
    """Ed25519 keys by kid. The active key signs; every key's public half verifies.

    Rotation: add the new key, switch ``JWT_ACTIVE_KID``, drop the old key once the
    longest-lived token it signed has expired.
    """

    def __init__(self, keys: Mapping[str, Ed25519PrivateKey], active_kid: str) -> None:
        if active_kid not in keys:
            raise ConfigError(f"active kid {active_kid!r} is not among the configured keys")
        self._private = dict(keys)
        self._public = {kid: key.public_key() for kid, key in keys.items()}
        self.active_kid = active_kid

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, production: bool) -> KeyRing:
        raw = environ.get("JWT_PRIVATE_KEYS", "").strip()
        active = environ.get("JWT_ACTIVE_KID", "").strip()
        if not raw:
            if production:
                raise ConfigError("JWT_PRIVATE_KEYS must be set in production")
            path = Path(environ.get("JWT_DEV_KEY_FILE") or DEFAULT_DEV_KEY_FILE)
            key = _load_or_create_dev_key(path)
            kid = _fingerprint_kid(key)
            return cls({kid: key}, kid)

        if raw.startswith("{"):
            try:
                pems = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError("JWT_PRIVATE_KEYS is not valid JSON") from exc
            if not pems or not all(
                isinstance(k, str) and k and isinstance(v, str) for k, v in pems.items()
            ):
                raise ConfigError('JWT_PRIVATE_KEYS must be a {"kid": "PEM", ...} object')
            keys = {
                kid: _load_private_key(pem, f"JWT_PRIVATE_KEYS[{kid!r}]")
                for kid, pem in pems.items()
            }
            if not active:
                if len(keys) != 1:
                    raise ConfigError("JWT_ACTIVE_KID is required when several keys are set")
                active = next(iter(keys))
            return cls(keys, active)

        # A single bare PEM: the kid is JWT_ACTIVE_KID if given, else a fingerprint.
        key = _load_private_key(raw, "JWT_PRIVATE_KEYS")
        kid = active or _fingerprint_kid(key)
        return cls({kid: key}, kid)

    @staticmethod
    def generate_pem() -> str:
        """A fresh Ed25519 private key as PKCS#8 PEM, for operators provisioning keys."""
        return _private_pem(Ed25519PrivateKey.generate())

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._public)

    @property
    def signing_key(self) -> Ed25519PrivateKey:
        return self._private[self.active_kid]

    def public_key(self, kid: str) -> Ed25519PublicKey | None:
        return self._public.get(kid)


# --- access tokens ---------------------------------------------------------------------------

_REGISTERED = frozenset({"iss", "aud", "iat", "nbf", "exp", "jti"})
_REQUIRED = ["iss", "aud", "exp", "nbf", "iat", "sub"]

# Fixed client-safe details: PyJWT's messages are never passed through.
_DETAILS: list[tuple[type[Exception], str]] = [
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.MissingRequiredClaimError, "missing claim"),
    (jwt.DecodeError, "malformed token"),
]


def _unauthenticated(detail: str) -> TokenError:
    return TokenError("unauthenticated", detail)


class TokenService:
    def __init__(
        self,
        keyring: KeyRing,
        issuer: str,
        audience: str,
        access_ttl: int = 900,
        leeway: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if access_ttl <= 0 or leeway < 0:
            raise ValueError("access_ttl must be positive and leeway non-negative")
        self.keyring = keyring
        self.issuer = issuer
        self.audience = audience
        self.access_ttl = access_ttl
        self.leeway = leeway
        self._clock = clock

    def issue_access(self, claims: dict[str, Any]) -> tuple[str, int]:
        """Sign ``claims`` (which must carry ``sub``) with the active key. Returns (token, ttl)."""
        clash = _REGISTERED & claims.keys()
        if clash:
            raise ValueError(f"claims set by the token service: {sorted(clash)}")
        if not isinstance(claims.get("sub"), str):
            raise ValueError("claims must include a string 'sub'")
        now = int(self._clock())
        payload = {
            **claims,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + self.access_ttl,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(
            payload,
            self.keyring.signing_key,
            algorithm=ALGORITHM,
            headers={"kid": self.keyring.active_kid},
        )
        return token, self.access_ttl

    def verify(self, token: str, audience: str | None = None) -> dict[str, Any]:
        """Return the claims of a valid token or raise ``TokenError``."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise _unauthenticated("malformed token")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise _unauthenticated("malformed token") from None
        key = self.keyring.public_key(kid) if isinstance(kid, str) else None
        if key is None:
            raise _unauthenticated("unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],  # pinned: the header's alg is never trusted
                audience=audience or self.audience,
                issuer=self.issuer,
                # Time claims are checked below against the injected clock instead.
                options={
                    "require": _REQUIRED,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "strict_aud": True,
                },
            )
        except jwt.PyJWTError as exc:
            detail = next((d for cls, d in _DETAILS if isinstance(exc, cls)), "invalid token")
            raise _unauthenticated(detail) from None
        self._check_times(claims)
        return claims

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        times = {name: claims[name] for name in ("iat", "nbf", "exp")}
        # We only ever issue integers; anything else (floats, bools, NaN) is not ours.
        if any(type(value) is not int for value in times.values()):
            raise _unauthenticated("malformed time claim")
        now = self._clock()
        if now >= times["exp"] + self.leeway:
            raise TokenError("token_expired", "token has expired")
        if times["nbf"] > now + self.leeway or times["iat"] > now + self.leeway:
            raise _unauthenticated("token not yet valid")


# --- passwords -------------------------------------------------------------------------------

# RFC 9106 "second recommended" (low-memory) argon2id profile.
ARGON2_TIME_COST = 3
ARGON2_MEMORY_COST = 64 * 1024  # KiB
ARGON2_PARALLELISM = 4
ARGON2_HASH_LEN = 32
ARGON2_SALT_LEN = 16
# PORTICO_ARGON2_FAST=1: cheap parameters so test suites don't spend seconds hashing.
ARGON2_FAST_TIME_COST = 1
ARGON2_FAST_MEMORY_COST = 1024  # KiB


@cache
def _build_hasher(fast: bool) -> PasswordHasher:
    return PasswordHasher(
        time_cost=ARGON2_FAST_TIME_COST if fast else ARGON2_TIME_COST,
        memory_cost=ARGON2_FAST_MEMORY_COST if fast else ARGON2_MEMORY_COST,
        parallelism=ARGON2_PARALLELISM,
        hash_len=ARGON2_HASH_LEN,
        salt_len=ARGON2_SALT_LEN,
        type=Type.ID,
    )


def _fast() -> bool:
    # Read on each call (not at import) so tests can flip the flag with monkeypatch.
    return env_text("PORTICO_ARGON2_FAST", "") == "1"


def _hasher() -> PasswordHasher:
    return _build_hasher(_fast())


@cache
def _dummy_hash(fast: bool) -> str:
    # Same parameters as real hashes, so verifying against it costs the same.
    return _build_hasher(fast).hash(secrets.token_urlsafe(16))


# Argon2 costs ~250 ms of CPU (and 64 MiB) per call. Run on the eventlet hub it would
# freeze every other request of the process for that long, so inside a green thread the
# work goes to eventlet's pool of OS threads (argon2-cffi releases the GIL while it
# hashes) and the hub keeps serving. At most ARGON2_MAX_CONCURRENT run at once, the rest
# wait on a green semaphore: each holds 64 MiB, and the gateway's container is limited
# to 256 MiB (services/registry.py, deploy/k8s/base); more threads would not add CPU anyway.
ARGON2_MAX_CONCURRENT = 2
# The hashing threads (and argon2's own lane threads, which inherit it) run at a lower
# CPU priority than the hub, so on a busy machine requests are served first and sign-ins
# take a little longer, not the other way round. Linux applies it per thread.
ARGON2_NICE = 10
_argon2_slots: Any = None


def _in_background(fn: Callable[..., T], *args: Any) -> T:
    """Run in a pool thread: lower this thread's priority (once; it stays lowered)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or not permitted
        tid = original("_thread").get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < ARGON2_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, ARGON2_NICE)
    return fn(*args)


def _off_loop(fn: Callable[..., T], *args: Any) -> T:
    if greenlet.getcurrent().parent is None:
        # Not in a green thread (CLI, seed, plain scripts and tests): nothing to freeze.
        return fn(*args)
    global _argon2_slots
    if _argon2_slots is None:
        _argon2_slots = eventlet.semaphore.Semaphore(ARGON2_MAX_CONCURRENT)
    with _argon2_slots:
        return cast(T, tpool.execute(_in_background, fn, *args))


def _usable(password_hash: Any) -> bool:
    """A stored value that is an argon2 hash we can verify against (a NULL or empty
    column, e.g. an invited account that has not chosen a password, is not)."""
    if not isinstance(password_hash, str) or not password_hash:
        return False
    try:
        extract_parameters(password_hash)
    except InvalidHashError:
        return False
    return True


def _verify(password_hash: str, password: str) -> bool:
    # Runs in a pool thread: everything here is pure computation.
    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _verify_dummy(fast: bool) -> None:
    with contextlib.suppress(VerificationError, InvalidHashError):
        _build_hasher(fast).verify(_dummy_hash(fast), "not-the-password")


def hash_password(password: str) -> str:
    return _off_loop(_hasher().hash, password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True only on a match; mismatches and malformed hashes are False, never an exception.

    Always costs exactly one argon2 verification, whatever ``password_hash`` is: a NULL
    or unusable hash (an account without a password yet) is checked against the dummy
    hash instead, so no answer comes back faster than a wrong password.
    """
    if not isinstance(password, str) or not _usable(password_hash):
        dummy_verify()
        return False
    assert isinstance(password_hash, str)  # noqa: S101 - narrowed by _usable
    return _off_loop(_verify, password_hash, password)


def needs_rehash(password_hash: str) -> bool:
    try:
        return _hasher().check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        # Unparseable hashes should be replaced at the next successful login.
        return True


def dummy_verify() -> None:
    """Spend as long as a real verify, for logins against unknown accounts.

    Without it, "no such user" answers measurably faster than "wrong password".
    """
    _off_loop(_verify_dummy, _fast())


# --- refresh tokens --------------------------------------------------------------------------


def hash_refresh_token(token: str) -> str:
    # The token is 256 random bits, so a fast unsalted hash is enough to keep the stored
    # value useless to someone who reads the database.
    return hashlib.sha256(token.encode()).hexdigest()


def new_refresh_token() -> tuple[str, str]:
    """Return (opaque token for the client, sha256 hex digest to store)."""
    token = secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)
