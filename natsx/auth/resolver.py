"""Account resolvers: where the server finds an account's JWT by its public key.

Theory of operation
-------------------
In operator mode every account is an account JWT, looked up by public key when a user of
that account connects or an import names it. The resolver only stores and returns tokens;
the caller verifies what it gets back (natsx.auth.jwt.verify_account), as the Go server does
in fetchAccountClaims, because a resolver's content can change underneath it.

:class:`MemoryResolver` is ``resolver: MEMORY`` (server/accounts.go MemAccResolver): a dict,
writable, filled at start-up from ``resolver_preload { <account key>: <jwt> }``. Each preload
must decode as an account JWT or start-up fails (setResolver / "preload account error"); an
expired or otherwise invalid one is accepted and only reported (checkResolvePreloads), so the
report is a separate call that takes the time from the caller.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import attrs

from natsx.auth import jwt

__all__ = ["ResolverError", "MissingAccountError", "MemoryResolver"]


class ResolverError(Exception):
    """A resolver could not store or return an account JWT."""


class MissingAccountError(ResolverError, KeyError):
    """The resolver has no JWT for this account (the Go server's ErrMissingAccount)."""

    def __str__(self) -> str:
        return "account missing"


@attrs.define(eq=False)
class MemoryResolver:
    """``resolver: MEMORY``: account public key -> account JWT, held in memory."""

    _jwts: dict[str, str] = attrs.field(factory=dict, alias="jwts")

    @classmethod
    def from_preload(cls, preloads: Mapping[str, str]) -> MemoryResolver:
        """A resolver holding ``resolver_preload``.

        Raises:
            ResolverError: a preload is not a decodable account JWT.
        """
        resolver = cls()
        resolver.preload(preloads)
        return resolver

    def preload(self, preloads: Mapping[str, str]) -> None:
        """Store every preload after checking that it decodes as an account JWT.

        Nothing is stored when one of them fails, so a bad config leaves no partial state.

        Raises:
            ResolverError: names the first account whose JWT does not decode.
        """
        for name, token in preloads.items():
            try:
                jwt.decode_account_claims(token)
            except jwt.JWTError as e:
                raise ResolverError(f"preload account error for {name!r}: {e}") from None
        self._jwts.update(preloads)

    @staticmethod
    def preload_issues(preloads: Mapping[str, str], now: float) -> dict[str, tuple[str, ...]]:
        """Blocking validation issues of each preload at ``now``, for start-up warnings."""
        report: dict[str, tuple[str, ...]] = {}
        for name, token in preloads.items():
            try:
                issues = jwt.validate(jwt.decode_account_claims(token), now)
            except jwt.JWTError as e:
                report[name] = (str(e),)
                continue
            if jwt.is_blocking(issues):
                report[name] = tuple(i.description for i in issues)
        return report

    @property
    def is_read_only(self) -> bool:
        return False

    def fetch(self, name: str) -> str:
        """The JWT stored for account ``name``.

        Raises:
            MissingAccountError: nothing is stored for ``name``.
        """
        try:
            return self._jwts[name]
        except KeyError:
            raise MissingAccountError(name) from None

    def store(self, name: str, token: str) -> None:
        """Store (or replace) the JWT of account ``name``; the caller has verified it."""
        self._jwts[name] = token

    def __contains__(self, name: object) -> bool:
        return name in self._jwts

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._jwts))

    def __len__(self) -> int:
        return len(self._jwts)
