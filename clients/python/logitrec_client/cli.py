"""`logitrec-client`: recommendations, scores, model info and health from a shell."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from logitrec_client.client import RecommenderClient
from logitrec_client.config import DEFAULT_TARGET, DEFAULT_TIMEOUT_S, SERVICE_NAME, TlsConfig
from logitrec_client.errors import LogitRecError
from logitrec_client.queries import Filter, Rerank
from logitrec_client.results import HealthStatus

# Exit codes: 0 success (and SERVING for `health`), 1 a failed call or not serving, 2 bad usage.
FAILED = 1
TOKEN_ENV = "LOGITREC_TOKEN"


def _id_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _key_value(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _filter(text: str) -> Filter:
    try:
        return Filter.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _rerank(args: argparse.Namespace) -> Rerank | None:
    settings = {
        "popularity_beta": args.popularity_beta,
        "mmr_lambda": args.mmr_lambda,
        "category_cap": args.category_cap,
    }
    if all(value is None for value in settings.values()) and not args.cap_field:
        return None
    return Rerank(**settings, cap_field=args.cap_field)


def _parser() -> argparse.ArgumentParser:
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--target", default=DEFAULT_TARGET, metavar="HOST:PORT", help=f"gateway ({DEFAULT_TARGET})"
    )
    connection.add_argument(
        "--token-file",
        metavar="PATH",
        help=f"file holding the bearer token (default: ${TOKEN_ENV} when set)",
    )
    connection.add_argument(
        "--token", help="bearer token (visible to other local users: prefer --token-file)"
    )
    connection.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="call deadline, seconds"
    )
    connection.add_argument("--tls", action="store_true", help="TLS with the system's CAs")
    connection.add_argument("--root-certs", help="PEM file of CAs to trust (implies --tls)")
    connection.add_argument("--client-cert", help="PEM client certificate chain (mutual TLS)")
    connection.add_argument("--client-key", help="PEM private key of --client-cert")
    connection.add_argument(
        "--server-name", help="name the server's certificate must carry (default: the host)"
    )
    connection.add_argument("--json", action="store_true", help="print JSON instead of a table")

    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", help="model name (default: the gateway's default)")
    model.add_argument("--model-version", type=int, help="model version (default: latest)")

    user = argparse.ArgumentParser(add_help=False, parents=[model])
    user.add_argument(
        "--history", type=_id_list, required=True, metavar="ID,ID,...", help="oldest first"
    )
    user.add_argument("--user-id", help="user id, for the gateway's logs")
    user.add_argument(
        "--context", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
        help="a user context feature (repeatable)",
    )  # fmt: skip

    parser = argparse.ArgumentParser(
        prog="logitrec-client", description="Call a LogitRec gateway from a shell."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    recommend = commands.add_parser(
        "recommend", parents=[connection, user], help="top-k items for a history"
    )
    recommend.add_argument("--k", type=int, default=10, help="how many items (default 10)")
    recommend.add_argument(
        "--include-seen", action="store_true", help="allow items already in the history"
    )
    recommend.add_argument(
        "--exclude", type=_id_list, default=[], metavar="ID,...", help="items never to return"
    )
    recommend.add_argument(
        "--allowed", type=_id_list, metavar="ID,...", help="rank only these items"
    )
    recommend.add_argument(
        "--filter", type=_filter, action="append", default=[], dest="filters",
        metavar="FIELD=A,B|FIELD>=N|FIELD<=N",
        help="only items whose metadata match (repeatable), e.g. genres=Comedy or year>=1990",
    )  # fmt: skip
    recommend.add_argument(
        "--explain", action="store_true", help="say which history items each item is due to"
    )
    recommend.add_argument(
        "--popularity-beta", type=float, help="> 0 favours less popular items (-5..5)"
    )
    recommend.add_argument("--mmr-lambda", type=float, help="1: model order, lower: diverse")
    recommend.add_argument("--category-cap", type=int, help="at most N items per category")
    recommend.add_argument("--cap-field", default="", help="metadata field the cap counts")
    score = commands.add_parser("score", parents=[connection, user], help="logits of given items")
    score.add_argument(
        "--items", type=_id_list, required=True, metavar="ID,...", help="item ids to score"
    )
    commands.add_parser("info", parents=[connection, model], help="what a model is")
    health = commands.add_parser("health", parents=[connection], help="is the gateway serving?")
    health.add_argument("--service", default=SERVICE_NAME, help='service name ("" = the server)')
    return parser


def _tls(args: argparse.Namespace) -> TlsConfig | bool:
    if args.root_certs or args.client_cert or args.client_key or args.server_name:
        return TlsConfig.from_files(
            args.root_certs, args.client_cert, args.client_key, server_name=args.server_name
        )
    return bool(args.tls)


def _token(args: argparse.Namespace) -> str | None:
    """--token, else the first line of --token-file, else $LOGITREC_TOKEN, else none."""
    if args.token:
        return args.token
    if args.token_file:
        lines = Path(args.token_file).read_text().strip().splitlines()
        if not lines:
            raise ValueError(f"{args.token_file}: empty token file")
        return lines[0].strip()
    return os.environ.get(TOKEN_ENV) or None


def _run(client: RecommenderClient, args: argparse.Namespace) -> tuple[object, int]:
    """The command's result and exit code."""
    if args.command == "recommend":
        result = client.recommend(
            args.history,
            args.k,
            user_id=args.user_id,
            context=dict(args.context),
            exclude_seen=not args.include_seen,
            exclude=args.exclude,
            allowed=args.allowed,
            explain=args.explain,
            rerank=_rerank(args),
            filters=args.filters,
            model=args.model,
            model_version=args.model_version,
        )
        return result, 0
    if args.command == "score":
        result = client.score(
            args.history,
            args.items,
            user_id=args.user_id,
            context=dict(args.context),
            model=args.model,
            model_version=args.model_version,
        )
        return result, 0
    if args.command == "info":
        return client.model_info(args.model, model_version=args.model_version), 0
    status = client.health(args.service)
    return status, 0 if status is HealthStatus.SERVING else FAILED


def _json(result: object) -> str:
    if isinstance(result, HealthStatus):
        return json.dumps({"status": result.name})
    return json.dumps(dataclasses.asdict(result), indent=2)  # type: ignore[call-overload]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with `argv` (default: sys.argv[1:]) and return its exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        token, tls = _token(args), _tls(args)
    except (OSError, ValueError) as error:  # unreadable or empty files: a usage error
        parser.error(str(error))
    client = RecommenderClient(args.target, token=token, tls=tls, timeout=args.timeout)
    try:
        with client:
            result, code = _run(client, args)
    except LogitRecError as error:
        print(f"logitrec-client: {error}", file=sys.stderr)
        return FAILED
    if args.json:
        print(_json(result))
    else:
        print(result.name if isinstance(result, HealthStatus) else result)
    return code


if __name__ == "__main__":
    sys.exit(main())
