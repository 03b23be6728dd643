"""Who may see the console and who may act in it: basic auth (Flower's model), CSRF on actions.

The rules, each a pure function here:

- The console is off unless started, and bound to loopback unless told otherwise. Bound anywhere
  else, it refuses to start without a login: every page then needs one.
- Bound to loopback with no viewer login configured, pages are open to the host's own users (as
  ``regionmesh runs show`` is to anyone holding the mesh file); once a viewer login is set, every
  page needs a login wherever the console is bound.
- Actions (cancel, retry) always need the operator login, wherever the console is bound: a viewer or
  an anonymous reader is refused (403, the page links to ``/login``, which asks for it); a request
  without a login where pages need one is challenged (401). No operator login configured: no actions.
- An action also needs the CSRF token of the page it was taken from: an HMAC of the user under a
  secret made when the console starts, so a form posted by another site (which a browser would
  send with the cached basic-auth header) is refused.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from dataclasses import dataclass
from enum import Enum
from hashlib import sha256

from regionmesh.errors import RegionmeshError

REALM = "regionmesh console"
ANONYMOUS = ""


class ConsoleAuthError(RegionmeshError):
    """The console's logins do not allow the requested binding (or one is malformed)."""

    exit_code = 2


@dataclass(frozen=True)
class Login:
    user: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"Login(user={self.user!r})"


@dataclass(frozen=True)
class Policy:
    """The logins and what the binding allows without one."""

    viewer: Login | None
    operator: Login | None
    open_reads: bool


@dataclass(frozen=True)
class Identity:
    user: str  # ANONYMOUS for an open read
    may_act: bool


class Decision(Enum):
    ALLOW = "allow"
    CHALLENGE = "challenge"  # 401 with WWW-Authenticate: ask for a login
    FORBID = "forbid"  # 403: logged in, not allowed


def parse_login(value: str | None, variable: str) -> Login | None:
    """``user:password`` (the password may contain colons) or None when unset."""
    if value is None or value == "":
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ConsoleAuthError(f"{variable} must be 'user:password' with both parts non-empty")
    return Login(user, password)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume it resolves beyond this machine


def policy_for(bind: str, viewer: Login | None, operator: Login | None) -> Policy:
    """The policy for a console bound to ``bind``; raises ConsoleAuthError when bound beyond
    loopback without any login."""
    if viewer is not None and operator is not None and viewer.user == operator.user:
        raise ConsoleAuthError("the viewer and operator logins must have different user names")
    loopback = is_loopback(bind)
    if not loopback and viewer is None and operator is None:
        raise ConsoleAuthError(
            f"refusing to serve on {bind} without a login: set REGIONMESH_CONSOLE_AUTH (and "
            "REGIONMESH_CONSOLE_OPERATOR_AUTH for actions) to user:password, or bind to 127.0.0.1")
    return Policy(viewer, operator, open_reads=loopback and viewer is None)


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic …`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def _matches(login: Login | None, user: str, password: str) -> bool:
    if login is None:
        return False
    # Both compared, in constant time, so a wrong user and a wrong password take the same time.
    same_user = hmac.compare_digest(login.user.encode(), user.encode())
    same_password = hmac.compare_digest(login.password.encode(), password.encode())
    return same_user and same_password


def identify(policy: Policy, header: str | None) -> Identity | None:
    """Who sent the request: a logged-in user, an anonymous reader where reads are open, or None."""
    creds = basic_credentials(header)
    if creds is not None:
        if _matches(policy.operator, *creds):
            return Identity(creds[0], may_act=True)
        if _matches(policy.viewer, *creds):
            return Identity(creds[0], may_act=False)
        return None  # wrong login: asked again, even where reads are open
    return Identity(ANONYMOUS, may_act=False) if policy.open_reads else None


def decide(identity: Identity | None, *, act: bool) -> Decision:
    """Whether a request may see a page (``act=False``) or take an action (``act=True``)."""
    if identity is None:
        return Decision.CHALLENGE
    if not act:
        return Decision.ALLOW
    # An anonymous reader (pages open on loopback) is refused, not challenged: the page it gets says
    # where to log in (/login challenges), and no browser prompt pops up in the middle of an action.
    return Decision.ALLOW if identity.may_act else Decision.FORBID


def csrf_token(secret: bytes, user: str) -> str:
    """The token a page's action forms carry for ``user``."""
    return hmac.new(secret, f"csrf:{user}".encode(), sha256).hexdigest()


def csrf_ok(secret: bytes, user: str, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(csrf_token(secret, user), token)


def same_origin(origin: str | None, host: str | None) -> bool:
    """A browser's ``Origin`` header on a form post matches the console's own host (an absent
    header is allowed: the CSRF token still decides)."""
    if origin is None or origin == "":
        return True
    if host is None:
        return False
    _, _, rest = origin.partition("://")
    return rest.rstrip("/") == host
