"""The main job's last step: start the gateway on an exported repository, ask it for
recommendations through the Python client, print them with titles (and, for the first user,
explained and re-ranked toward less popular items), stop the gateway.

    python scripts/serve_and_query.py --repository artifacts/model_repository [--users 2]

The histories are real ones: the users the export's parity check used.
"""

import argparse
from pathlib import Path

import numpy as np
import polars as pl
from logitrec_client import RecommenderClient, Rerank

from logitrec import repository as layout
from logitrec.gateway_process import GatewayFailed, running_gateway


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--users", type=int, default=2)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    names = layout.model_names(args.repository)
    if not names:
        raise SystemExit(f"{args.repository}: no exported model versions (run `logitrec export`)")
    scorer = layout.scorer_dir(
        args.repository, names[0], layout.latest_version(args.repository, names[0])
    )
    catalog = pl.read_parquet(scorer / layout.CATALOG).sort("index")
    ids, titles = catalog["item_id"].to_list(), catalog["title"].to_list()
    histories = np.load(scorer / layout.PARITY_HISTORIES)[: args.users]
    try:
        with (
            running_gateway(args.repository, "--log-level", "warning") as gateway,
            RecommenderClient(gateway.target) as client,
        ):
            info = client.model_info()
            print(
                f"\ngateway on {gateway.target}: {info.model} v{info.model_version}, "
                f"{info.num_items} items, {info.backend} backend"
            )
            for row in histories:
                history = [ids[i - 1] for i in row if i]
                recent = "; ".join(titles[i - 1] or ids[i - 1] for i in row[-5:] if i)
                print(f"\nhistory of {len(history)} items, most recent: {recent}")
                print(client.recommend(history, k=args.k))
            history = [ids[i - 1] for i in histories[0] if i]
            print("\nthe first user again, explained, less popular items favoured (beta 0.4):")
            print(client.recommend(history, k=5, explain=True, rerank=Rerank(popularity_beta=0.4)))
    except GatewayFailed as error:
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    main()
