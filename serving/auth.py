"""Bearer-token authentication with roles, checked before a request is even decoded.

Callers send `authorization: Bearer <token>` metadata. Tokens come from a TOML file (reloaded
when it changes) and from the environment, never from the command line, where every local
user could read them:

    # tokens.toml: one [[token]] table per credential
    [[token]]
    name = "web-frontend"      # appears in logs, never the token itself
    role = "recommend"         # recommend: the data plane; admin: also logitrec.admin.v1
    sha256 = "5e88...42"       # hex SHA-256 of the token (or: token = "<the token>")

    LOGITREC_RECOMMEND_TOKENS / LOGITREC_ADMIN_TOKENS: comma-separated tokens

The gateway keeps only SHA-256 digests and compares the presented token's digest with every
configured one using `hmac.compare_digest`, without stopping at a match: how long the check
takes depends neither on how many characters of a token are right nor on which one matched.

The policy maps each gRPC service to the role it needs; health is open (load balancers probe
it without credentials), every other service, unknown ones included, needs a valid token, so
an unauthenticated caller learns nothing about what the server offers.
"""

import hashlib
import logging
import os
import tomllib
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from hmac import compare_digest
from pathlib import Path

import grpc

from logitrec.errors import InputError
from serving.errors import bounded
from serving.grpc_handlers import HANDLER_FACTORIES
from serving.logs import cut

log = logging.getLogger("logitrec.access")

RECOMMEND = "recommend"
ADMIN = "admin"
ROLES = (RECOMMEND, ADMIN)
# What each role may do: admin is a superset (operators also query the models they roll in).
GRANTS = {RECOMMEND: frozenset({RECOMMEND}), ADMIN: frozenset({RECOMMEND, ADMIN})}
ENV_VARIABLES = {RECOMMEND: "LOGITREC_RECOMMEND_TOKENS", ADMIN: "LOGITREC_ADMIN_TOKENS"}
MIN_TOKEN_CHARS = 16  # shorter secrets can be guessed; `logitrec token new` makes 43-char ones
OPEN = None  # the policy's marker for a service anyone may call
# The authenticated caller's token name, for the access and audit lines of the call.
CALLER: ContextVar[str | None] = ContextVar("logitrec_caller", default=None)


@dataclass(frozen=True)
class Credential:
    name: str
    role: str
    digest: bytes  # SHA-256 of the token

    def __repr__(self) -> str:  # the digest stays out of logs and tracebacks
        return f"Credential({self.name!r}, role={self.role!r})"


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    """The configured credentials; `authenticate` is the one place a token is checked."""

    def __init__(self, credentials: tuple[Credential, ...]) -> None:
        self.credentials = credentials

    def __len__(self) -> int:
        return len(self.credentials)

    def authenticate(self, token: str) -> Credential | None:
        presented = token_digest(token)
        found = None
        for credential in self.credentials:  # all of them, match or not: no early exit
            if compare_digest(presented, credential.digest) and found is None:
                found = credential
        return found


# -- loading --------------------------------------------------------------------------------
def _check_token(token: object, where: str) -> str:
    if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS:
        raise InputError(
            f"{where}: a token needs at least {MIN_TOKEN_CHARS} characters "
            "(make one with `logitrec token new`)"
        )
    if not token.isascii() or not token.isprintable() or " " in token or "," in token:
        raise InputError(f"{where}: a token is printable ASCII without spaces or commas")
    return token


def _file_credentials(path: Path) -> list[Credential]:
    try:
        document = tomllib.loads(path.read_text())
    except OSError as error:
        raise InputError(f"{path}: cannot read the tokens file ({error.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not valid TOML ({error})") from None
    unknown = set(document) - {"token"}
    if unknown:
        raise InputError(
            f"{path}: unknown table(s) {', '.join(sorted(unknown))}; expected [[token]]"
        )
    credentials = []
    for number, entry in enumerate(document.get("token", []), start=1):
        where = f"{path}: token #{number}"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected a [[token]] table")
        extra = set(entry) - {"name", "role", "token", "sha256"}
        if extra:
            raise InputError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        name, role = entry.get("name"), entry.get("role")
        if not isinstance(name, str) or not name:
            raise InputError(f"{where}: 'name' is required (it names the caller in logs)")
        where = f"{path}: token {name!r}"
        if role not in ROLES:
            raise InputError(f"{where}: 'role' must be one of {', '.join(ROLES)}, got {role!r}")
        if ("token" in entry) == ("sha256" in entry):
            raise InputError(f"{where}: give exactly one of 'token' and 'sha256'")
        if "token" in entry:
            digest = token_digest(_check_token(entry["token"], where))
        else:
            try:
                digest = bytes.fromhex(entry["sha256"])
            except (TypeError, ValueError):
                digest = b""
            if len(digest) != 32:
                raise InputError(f"{where}: 'sha256' must be 64 hex digits")
        credentials.append(Credential(name, role, digest))
    if not credentials:
        raise InputError(f"{path}: no [[token]] entries (that would lock every caller out)")
    return credentials


def _environment_credentials(environ: Mapping[str, str]) -> list[Credential]:
    credentials = []
    for role, variable in ENV_VARIABLES.items():
        tokens = [t.strip() for t in environ.get(variable, "").split(",") if t.strip()]
        for number, token in enumerate(tokens, start=1):
            digest = token_digest(_check_token(token, f"${variable} (token #{number})"))
            credentials.append(Credential(f"{variable.lower()}#{number}", role, digest))
    return credentials


def load_tokens(path: Path | None, environ: Mapping[str, str] | None = None) -> TokenTable:
    """Every configured credential (none: authentication is off). Names must be unique."""
    environ = os.environ if environ is None else environ
    credentials = _environment_credentials(environ)
    if path is not None:
        credentials += _file_credentials(Path(path))
    names = [c.name for c in credentials]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        where = path or "$LOGITREC_*_TOKENS"
        raise InputError(f"{where}: token name(s) used twice: {', '.join(duplicates)}")
    return TokenTable(tuple(credentials))


# -- the interceptor ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Denial:
    code: grpc.StatusCode
    message: str


def bearer_token(metadata) -> str | Denial:
    values = [value for key, value in metadata or () if key == "authorization"]
    if not values:
        return Denial(grpc.StatusCode.UNAUTHENTICATED, "missing bearer token (authorization)")
    scheme, _, token = str(values[0]).partition(" ")
    if len(values) > 1 or scheme.lower() != "bearer" or not token.strip():
        return Denial(
            grpc.StatusCode.UNAUTHENTICATED, "authorization: expected one 'Bearer <token>'"
        )
    return token.strip()


def service_of(method: str) -> str:
    """ "/package.Service/Method" -> "package.Service"."""
    return method.rsplit("/", 1)[0].lstrip("/")


def required_role(method: str, policy: Mapping[str, str | None]) -> str | None:
    return policy.get(service_of(method), RECOMMEND)


def check(method: str, metadata, table: TokenTable, policy: Mapping[str, str | None]):
    """The caller's Credential, None for an open service, or the Denial to answer with.
    `method` is gRPC's "/package.Service/Method"; services missing from `policy` need a
    valid token of any role."""
    service = service_of(method)
    needed = required_role(method, policy)
    if needed is OPEN:
        return None
    token = bearer_token(metadata)
    if isinstance(token, Denial):
        return token
    credential = table.authenticate(token)
    if credential is None:
        return Denial(grpc.StatusCode.UNAUTHENTICATED, "invalid token")
    if needed not in GRANTS[credential.role]:
        return Denial(
            grpc.StatusCode.PERMISSION_DENIED,
            f"role {credential.role!r} may not call {bounded(service, 100)}: it needs {needed!r}",
        )
    return credential


def _refusal(denial: Denial, method: str, handler: grpc.RpcMethodHandler, on_denied):
    """A handler of the same kind as `handler` that answers `denial` without reading the
    request body (no deserializer: the bytes are never decoded)."""

    async def deny(request_or_iterator, context: grpc.aio.ServicerContext):
        on_denied(denial, method, context.peer())
        await context.abort(denial.code, denial.message)

    if handler.response_streaming:

        async def deny_stream(request_or_iterator, context):
            await deny(request_or_iterator, context)
            yield  # never reached: makes this an async generator, as streaming handlers are

        behavior = deny_stream
    else:
        behavior = deny
    factory = HANDLER_FACTORIES[(handler.request_streaming, handler.response_streaming)]
    return factory(behavior)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks every call against `policy` ({service full name: role, or OPEN}) with the
    tokens `table()` returns now (so a reloaded file takes effect on the next call)."""

    def __init__(
        self,
        table: Callable[[], TokenTable],
        policy: Mapping[str, str | None],
        on_denied: Callable[[Denial, str, str], None] | None = None,
    ) -> None:
        self.table = table
        self.policy = dict(policy)
        self.on_denied = on_denied or log_denial

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        verdict = check(method, handler_call_details.invocation_metadata, self.table(), self.policy)
        handler = await continuation(handler_call_details)
        if not isinstance(verdict, Denial):
            if verdict is not None:  # the handler runs in this context: its logs name the caller
                CALLER.set(verdict.name)
            return handler  # None for an unknown method: gRPC answers UNIMPLEMENTED
        # A refused caller gets the same answer whether or not the method exists.
        return _refusal(verdict, method, handler or _UNARY, self.on_denied)


_UNARY = grpc.unary_unary_rpc_method_handler(None)


def log_denial(denial: Denial, method: str, peer: str) -> None:
    """One access line per refused call: method, status, peer; never the token. Wrong tokens
    are routine noise at info; an authenticated caller overstepping its role is a warning."""
    level = logging.WARNING if denial.code is grpc.StatusCode.PERMISSION_DENIED else logging.INFO
    status = denial.code.name
    log.log(
        level,
        "%s %s %s",
        cut(method, 120),
        status,
        denial.message,
        extra={"method": cut(method, 120), "status": status, "peer": cut(peer, 100)},
    )
