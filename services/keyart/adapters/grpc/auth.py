"""Bearer tokens on keyart.v1.ArtworkRanker: who may call which method.

Off unless KEYART_AUTH_TOKENS_FILE names a token file. The file (YAML or JSON) holds
the SHA-256 of each token, never the token, and the methods it may call:

    tokens:
      - name: ui-tier
        sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
        methods: [RankArtwork, ReportOutcome]

A call sends `authorization: Bearer <token>` metadata. No or unknown token:
UNAUTHENTICATED; a token not allowed the method: PERMISSION_DENIED. Health and
reflection stay open (load balancers probe them without credentials).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keyart.errors import AuthConfigError, PermissionDenied, Unauthenticated

METHODS = ("RankArtwork", "ReportOutcome")


class _Token(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    methods: list[str] = Field(default_factory=lambda: list(METHODS), min_length=1)


class _TokenFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: list[_Token] = Field(min_length=1)


@dataclass(frozen=True)
class TokenAuth:
    """Token digests and the methods each may call."""

    allowed: dict[str, tuple[str, frozenset[str]]]  # sha256 -> (name, methods)

    @classmethod
    def from_file(cls, path: Path) -> TokenAuth:
        """Raises AuthConfigError naming the file, the field and the reason."""
        try:
            text = Path(path).read_text("utf-8")
            raw = json.loads(text) if Path(path).suffix == ".json" else yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
            raise AuthConfigError(f"{path}: cannot read the token file ({type(exc).__name__}: {exc})") from None
        try:
            spec = _TokenFile.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                 for e in exc.errors(include_url=False))
            raise AuthConfigError(f"{path}: {problems}") from None
        allowed: dict[str, tuple[str, frozenset[str]]] = {}
        for k, t in enumerate(spec.tokens):
            unknown = sorted(set(t.methods) - set(METHODS))
            if unknown:
                raise AuthConfigError(f"{path}: tokens.{k}.methods: {', '.join(unknown)} is not one of "
                                      f"{', '.join(METHODS)}")
            if t.sha256 in allowed:
                raise AuthConfigError(f"{path}: tokens.{k}.sha256: the same as {allowed[t.sha256][0]!r}'s")
            allowed[t.sha256] = (t.name, frozenset(t.methods))
        return cls(allowed)

    def check(self, metadata: Iterable[tuple[str, str | bytes]], method: str) -> str:
        """The caller's token name; raises Unauthenticated or PermissionDenied."""
        presented = [v for k, v in metadata if k.lower() == "authorization"]
        if not presented:
            raise Unauthenticated("authorization: no 'Bearer <token>' metadata")
        value = presented[0] if isinstance(presented[0], str) else presented[0].decode("utf-8", "replace")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization: expected 'Bearer <token>'")
        digest = hashlib.sha256(token.strip().encode()).hexdigest()
        for known, (name, methods) in self.allowed.items():
            if hmac.compare_digest(known, digest):
                if method not in methods:
                    raise PermissionDenied(f"token {name!r} may not call {method}")
                return name
        raise Unauthenticated("authorization: unknown token")
