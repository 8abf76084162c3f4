"""Client identity resolution at scale: N counterparties against M CRM clients.

    uv run python bench/identity.py --counterparties 1000000 --clients 100000

Synthetic company names drawn from a shared vocabulary (so blocking has real work), a third of the
counterparties carrying a tax id or an account, the rest matched by name (exact variants and typos).
Reports wall time per stage, matches per method and throughput. Issue 4's target: minutes, not hours.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import polars as pl  # noqa: E402

from transforms import identity  # noqa: E402

WORDS = ("alpen baltic rhein nord sued falken eichen linden stahl kraft blau gruen hansa elbe weser donau bergmann "
         "schmidt vogel adler kessler meyer orion polaris vega atlas kappa sigma delta omega logistik bau handel "
         "technik metall transport systeme medizin agrar software spedition maschinen").split()
FORMS = ("GmbH", "AG", "KG", "B.V.", "Sp. z o.o.", "UAB", "SIA", "OÜ", "Ltd", "ООО", "s.r.o.")


def company(rng: random.Random, i: int) -> str:
    """Three or four words from a small vocabulary: every token is common, as in real name lists."""
    words = [rng.choice(WORDS).title() for _ in range(3 + (i % 2))]
    return " ".join(words)


def typo(rng: random.Random, name: str) -> str:
    i = rng.randrange(1, len(name) - 1)
    return name[:i] + name[i + 1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counterparties", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=20_000)
    args = parser.parse_args()
    rng = random.Random(7)
    names = [company(rng, i) for i in range(args.clients)]
    clients = pl.DataFrame({
        "client_id": [f"C{i}" for i in range(args.clients)],
        "name": [f"{n} {rng.choice(FORMS)}" for n in names],
        "tax_id_key": [None] * args.clients, "account_keys": [[f"ACCT{i}"] for i in range(args.clients)],
    }).with_columns(name_key=identity.normalise_company_name(pl.col("name"))).lazy()
    rows = []
    for j in range(args.counterparties):
        i = rng.randrange(args.clients)
        kind = rng.random()
        if kind < 0.33:
            rows.append((f"acct:ACCT{i}", None, f"ACCT{i}", None))
        elif kind < 0.66:
            rows.append((None, None, None, f"{names[i].upper()} {rng.choice(FORMS)}"))
        elif kind < 0.9:
            rows.append((None, None, None, typo(rng, names[i])))
        else:
            rows.append((None, None, None, company(rng, args.clients + j)))  # nobody we know
    start = time.perf_counter()
    cps = (pl.DataFrame(rows, schema={"counterparty_key": pl.String, "_tax": pl.String, "_acct": pl.String,
                                      "raw_name": pl.String}, orient="row")
           .with_columns(_name=identity.normalise_company_name(pl.col("raw_name")))
           .with_columns(counterparty_key=pl.coalesce("counterparty_key", identity.name_key(pl.col("_name"))))
           .unique("counterparty_key").lazy())
    prepared = time.perf_counter() - start
    start = time.perf_counter()
    match = identity.resolve(cps, clients, threshold=90).collect()
    resolved = time.perf_counter() - start
    print(f"{match.height:,} distinct counterparties against {args.clients:,} clients")
    print(f"normalise names: {prepared:.1f} s; resolve: {resolved:.1f} s "
          f"({match.height / resolved:,.0f} counterparties/s)")
    print(match.group_by("method").len().sort("len", descending=True))


if __name__ == "__main__":
    main()
