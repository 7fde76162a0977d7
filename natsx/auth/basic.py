"""Authentication from options given on the command line: one token, or one user.

Mirrors server/auth.go for these cases: a token server accepts a CONNECT whose
``auth_token`` matches; a user server accepts the configured ``user``/``pass``. A password
or token stored as a bcrypt hash (``$2a$``...) is checked as a hash, as Go does.
"""
from __future__ import annotations

import hmac


def _compare(secret: str, given: str) -> bool:
    if secret.startswith("$2"):
        try:
            import bcrypt
        except ImportError:  # pragma: no cover - bcrypt is a dependency
            return False
        try:
            return bcrypt.checkpw(given.encode(), secret.encode())
        except ValueError:
            return False
    return hmac.compare_digest(secret.encode(), given.encode())


class Authenticator:
    """Decides whether a CONNECT is allowed; returns the user name shown in /connz."""

    def __init__(self, options) -> None:
        self.username = options.username
        self.password = options.password
        self.token = options.authorization
        self.timeout = options.auth_timeout
        self.required = bool(self.username or self.token)
        self.nonce_required = False

    def check(self, connect: dict, conn) -> str | None:
        if self.token:
            given = connect.get("auth_token")
            if isinstance(given, str) and _compare(self.token, given):
                return ""
            return None
        if self.username:
            user = connect.get("user")
            password = connect.get("pass")
            if (isinstance(user, str) and isinstance(password, str)
                    and hmac.compare_digest(self.username.encode(), user.encode())
                    and _compare(self.password, password)):
                return user
            return None
        return ""
