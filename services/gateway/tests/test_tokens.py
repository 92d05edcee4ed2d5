import base64
import hashlib
import hmac
import json
import stat

import jwt
import pytest
from argon2 import profiles
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.gateway import tokens
from services.gateway.tokens import (
    ConfigError,
    KeyRing,
    TokenError,
    TokenService,
    dummy_verify,
    hash_password,
    hash_refresh_token,
    needs_rehash,
    new_refresh_token,
    verify_password,
)

NOW = 1_700_000_000
ISS = "https://portico.test"
AUD = "portico-api"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: dict) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def flip_char(segment: str, index: int) -> str:
    # A middle character carries 6 full bits, so changing it always changes the decoded bytes.
    replacement = "A" if segment[index] != "A" else "B"
    return segment[:index] + replacement + segment[index + 1 :]


def valid_claims(**overrides):
    claims = {"sub": "user-1", "iss": ISS, "aud": AUD, "iat": NOW, "nbf": NOW, "exp": NOW + 900}
    claims.update(overrides)
    return claims


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def ring(key) -> KeyRing:
    return KeyRing({"k1": key}, "k1")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(ring, clock) -> TokenService:
    return TokenService(ring, issuer=ISS, audience=AUD, clock=clock)


def assert_refused(svc: TokenService, token: str, code: str = "unauthenticated") -> TokenError:
    with pytest.raises(TokenError) as info:
        svc.verify(token)
    assert info.value.code == code
    return info.value


# --- access tokens ---------------------------------------------------------------------------


def test_round_trip(svc):
    token, expires_in = svc.issue_access({"sub": "user-1", "tenant": "acme", "roles": ["admin"]})

    assert expires_in == 900
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    assert header["kid"] == "k1"
    claims = svc.verify(token)
    assert claims["sub"] == "user-1"
    assert claims["tenant"] == "acme"
    assert claims["roles"] == ["admin"]
    assert (claims["iss"], claims["aud"]) == (ISS, AUD)
    assert claims["iat"] == claims["nbf"] == NOW
    assert claims["exp"] == NOW + 900
    assert len(claims["jti"]) == 32


def test_each_token_gets_a_fresh_jti(svc):
    first, _ = svc.issue_access({"sub": "u"})
    second, _ = svc.issue_access({"sub": "u"})
    assert svc.verify(first)["jti"] != svc.verify(second)["jti"]


def test_issue_rejects_reserved_claims_and_missing_sub(svc):
    with pytest.raises(ValueError, match="exp"):
        svc.issue_access({"sub": "u", "exp": NOW + 10**9})
    with pytest.raises(ValueError, match="sub"):
        svc.issue_access({"tenant": "acme"})


def test_expired_token(svc, clock):
    token, ttl = svc.issue_access({"sub": "u"})
    clock.now = NOW + ttl - 1
    svc.verify(token)
    clock.now = NOW + ttl
    err = assert_refused(svc, token, code="token_expired")
    assert str(err) == "token_expired: token has expired"


def test_leeway_tolerates_small_clock_skew(ring, clock):
    svc = TokenService(ring, issuer=ISS, audience=AUD, access_ttl=60, leeway=5, clock=clock)
    token, _ = svc.issue_access({"sub": "u"})
    clock.now = NOW + 64
    svc.verify(token)
    clock.now = NOW + 65
    assert_refused(svc, token, code="token_expired")
    clock.now = NOW - 5
    svc.verify(token)
    clock.now = NOW - 6
    assert_refused(svc, token)


def test_nbf_in_future(svc, key):
    token = jwt.encode(valid_claims(nbf=NOW + 60), key, algorithm="EdDSA", headers={"kid": "k1"})
    assert assert_refused(svc, token).detail == "token not yet valid"


def test_iat_in_future(svc, key):
    token = jwt.encode(valid_claims(iat=NOW + 60), key, algorithm="EdDSA", headers={"kid": "k1"})
    assert_refused(svc, token)


def test_float_time_claims_are_refused(svc, key):
    token = jwt.encode(valid_claims(exp=1e20), key, algorithm="EdDSA", headers={"kid": "k1"})
    assert_refused(svc, token)


@pytest.mark.parametrize("claim", ["sub", "iss", "aud", "exp", "nbf", "iat"])
def test_missing_required_claim(svc, key, claim):
    claims = valid_claims()
    del claims[claim]
    token = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "k1"})
    assert_refused(svc, token)


def test_wrong_audience(svc, ring, clock):
    other = TokenService(ring, issuer=ISS, audience="billing", clock=clock)
    token, _ = other.issue_access({"sub": "u"})
    assert assert_refused(svc, token).detail == "wrong audience"
    # ...but an explicit audience argument accepts it.
    assert svc.verify(token, audience="billing")["aud"] == "billing"


def test_audience_list_is_refused(svc, key):
    token = jwt.encode(
        valid_claims(aud=[AUD, "billing"]), key, algorithm="EdDSA", headers={"kid": "k1"}
    )
    assert_refused(svc, token)


def test_wrong_issuer(svc, ring, clock):
    other = TokenService(ring, issuer="https://evil.test", audience=AUD, clock=clock)
    token, _ = other.issue_access({"sub": "u"})
    assert assert_refused(svc, token).detail == "wrong issuer"


def test_tampered_payload(svc):
    token, _ = svc.issue_access({"sub": "user-1"})
    header, payload, sig = token.split(".")
    tampered = ".".join([header, flip_char(payload, len(payload) // 2), sig])
    assert tampered != token
    assert_refused(svc, tampered)


def test_swapped_payload_keeps_signature_invalid(svc):
    token, _ = svc.issue_access({"sub": "user-1"})
    header, _, sig = token.split(".")
    forged = ".".join([header, b64json(valid_claims(sub="admin")), sig])
    assert assert_refused(svc, forged).detail == "bad signature"


def test_tampered_signature(svc):
    token, _ = svc.issue_access({"sub": "user-1"})
    header, payload, sig = token.split(".")
    tampered = ".".join([header, payload, flip_char(sig, len(sig) // 2)])
    assert assert_refused(svc, tampered).detail == "bad signature"


@pytest.mark.parametrize(
    "header",
    [{"alg": "none"}, {"alg": "none", "kid": "k1"}, {"alg": "none", "typ": "JWT", "kid": "k1"}],
)
def test_alg_none_is_refused(svc, header):
    token = f"{b64json(header)}.{b64json(valid_claims())}."
    assert_refused(svc, token)


def test_hs256_signed_with_public_key_is_refused(svc, key):
    # Algorithm confusion: an attacker who knows the public PEM uses it as an HMAC secret.
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = (
        f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': 'k1'})}.{b64json(valid_claims())}"
    )
    sig = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(sig)}"
    err = assert_refused(svc, token)
    assert err.detail == "algorithm not allowed"


def test_unknown_kid(svc):
    stranger = Ed25519PrivateKey.generate()
    token = jwt.encode(valid_claims(), stranger, algorithm="EdDSA", headers={"kid": "nope"})
    assert assert_refused(svc, token).detail == "unknown key"


def test_known_kid_with_foreign_key(svc):
    stranger = Ed25519PrivateKey.generate()
    token = jwt.encode(valid_claims(), stranger, algorithm="EdDSA", headers={"kid": "k1"})
    assert assert_refused(svc, token).detail == "bad signature"


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "x" * 10_000])
def test_garbage_is_refused(svc, token):
    err = assert_refused(svc, token)
    assert len(err.detail) < 40


def test_rotation(clock):
    old_pem, new_pem = KeyRing.generate_pem(), KeyRing.generate_pem()

    def service(keys: dict, active: str) -> TokenService:
        env = {"JWT_PRIVATE_KEYS": json.dumps(keys), "JWT_ACTIVE_KID": active}
        return TokenService(KeyRing.from_env(env, production=True), ISS, AUD, clock=clock)

    before = service({"old": old_pem}, "old")
    old_token, _ = before.issue_access({"sub": "u"})

    during = service({"old": old_pem, "new": new_pem}, "new")
    new_token, _ = during.issue_access({"sub": "u"})
    assert jwt.get_unverified_header(new_token)["kid"] == "new"
    assert during.verify(old_token)["sub"] == "u"
    assert during.verify(new_token)["sub"] == "u"

    after = service({"new": new_pem}, "new")
    assert after.verify(new_token)["sub"] == "u"
    assert assert_refused(after, old_token).detail == "unknown key"


# --- key configuration -----------------------------------------------------------------------


def test_dev_key_file_created_once_and_shared(tmp_path, clock):
    path = tmp_path / "keys" / "dev.pem"
    env = {"JWT_DEV_KEY_FILE": str(path)}

    first = KeyRing.from_env(env, production=False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    content = path.read_bytes()
    second = KeyRing.from_env(env, production=False)

    assert path.read_bytes() == content
    assert list(path.parent.iterdir()) == [path]  # no temp files left behind
    assert first.active_kid == second.active_kid
    token, _ = TokenService(first, ISS, AUD, clock=clock).issue_access({"sub": "u"})
    assert TokenService(second, ISS, AUD, clock=clock).verify(token)["sub"] == "u"


def test_production_without_keys_raises(tmp_path):
    # Even an existing dev key file must not be picked up in production.
    path = tmp_path / "dev.pem"
    KeyRing.from_env({"JWT_DEV_KEY_FILE": str(path)}, production=False)
    with pytest.raises(ConfigError):
        KeyRing.from_env({"JWT_DEV_KEY_FILE": str(path)}, production=True)
    with pytest.raises(ConfigError):
        KeyRing.from_env({"JWT_PRIVATE_KEYS": "  "}, production=True)


def test_single_bare_pem(key):
    pem = tokens._private_pem(key)
    ring = KeyRing.from_env({"JWT_PRIVATE_KEYS": pem, "JWT_ACTIVE_KID": "main"}, production=True)
    assert ring.active_kid == "main"
    assert ring.kids == {"main"}


@pytest.mark.parametrize(
    "env",
    [
        {"JWT_PRIVATE_KEYS": "{not json"},
        {"JWT_PRIVATE_KEYS": "{}"},
        {"JWT_PRIVATE_KEYS": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----"},
        {"JWT_PRIVATE_KEYS": json.dumps({"a": "x", "b": "y"})},
    ],
)
def test_malformed_key_config(env):
    with pytest.raises(ConfigError):
        KeyRing.from_env(env, production=True)


def test_active_kid_must_exist_and_be_named_when_several():
    keys = json.dumps({"a": KeyRing.generate_pem(), "b": KeyRing.generate_pem()})
    with pytest.raises(ConfigError, match="JWT_ACTIVE_KID"):
        KeyRing.from_env({"JWT_PRIVATE_KEYS": keys}, production=True)
    with pytest.raises(ConfigError, match="'c'"):
        KeyRing.from_env({"JWT_PRIVATE_KEYS": keys, "JWT_ACTIVE_KID": "c"}, production=True)


def test_non_ed25519_key_rejected():
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(ConfigError, match="not Ed25519"):
        KeyRing.from_env({"JWT_PRIVATE_KEYS": json.dumps({"a": ec_pem})}, production=True)


# --- passwords -------------------------------------------------------------------------------


@pytest.fixture
def fast_argon(monkeypatch):
    monkeypatch.setenv("PORTICO_ARGON2_FAST", "1")


def test_password_hash_and_verify(fast_argon):
    stored = hash_password("correct horse")
    assert stored.startswith("$argon2id$")
    assert stored != hash_password("correct horse")  # salted
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "correct horsf")
    assert not needs_rehash(stored)


@pytest.mark.parametrize(
    "bad", ["", "plaintext", "$argon2id$v=19$m=abc", "$argon2id$v=19$m=1024,t=1,p=4$xx$yy", None]
)
def test_verify_malformed_hash_is_false(fast_argon, bad):
    assert verify_password(bad, "anything") is False


def test_needs_rehash_when_parameters_change(monkeypatch):
    monkeypatch.setenv("PORTICO_ARGON2_FAST", "1")
    weak = hash_password("pw")
    monkeypatch.delenv("PORTICO_ARGON2_FAST")
    assert needs_rehash(weak)
    assert needs_rehash("not-a-hash")


def test_production_parameters_follow_rfc9106_low_memory():
    p = profiles.RFC_9106_LOW_MEMORY
    h = tokens._build_hasher(False)
    assert (h.time_cost, h.memory_cost, h.parallelism) == (p.time_cost, p.memory_cost, 4)
    assert (h.hash_len, h.salt_len, h.type) == (p.hash_len, p.salt_len, p.type)


def test_dummy_verify_costs_like_a_real_hash(fast_argon):
    dummy_verify()  # must not raise
    # The dummy hash uses the current parameters, so verifying it costs the same as a real one.
    assert not needs_rehash(tokens._dummy_hash(True))


# --- refresh tokens --------------------------------------------------------------------------


def test_refresh_tokens():
    token, digest = new_refresh_token()
    other, other_digest = new_refresh_token()

    assert len(token) >= 43
    assert token != other and digest != other_digest
    assert digest == hash_refresh_token(token) == hashlib.sha256(token.encode()).hexdigest()
    assert hash_refresh_token(token) == hash_refresh_token(token)
    assert len(digest) == 64 and token not in digest
