"""ladder_transitions: how clients move up and down the loyalty ladder, month by month (DOMAIN §6).

Grain: one row per month, from_step and to_step with at least one client. from_step 'new' marks a first
purchase; to_step 'lost' a client no longer active (no payment within the activity window). The number of
clients on a step at the end of a month is ``step_total`` (the same on every row of that month and to_step).
"""

from __future__ import annotations

import polars as pl

NAME = "ladder_transitions"
GRAIN = "one row per month, from_step and to_step"
KEY = ("month", "from_step", "to_step")
PARTITION_BY = None
SCHEMA: dict[str, tuple[pl.DataType, str]] = {
    "month": (pl.Date(), "First day of the month (steps are measured at its end)"),
    "from_step": (pl.String(), "Step at the end of the previous month: new | first_purchase | repeat | regular | "
                               "adherent | advocate | lost"),
    "to_step": (pl.String(), "Step at the end of this month"),
    "clients": (pl.Int32(), "Clients making this move"),
    "step_total": (pl.Int32(), "Clients on to_step at the end of the month"),
}


def build(transitions: pl.LazyFrame) -> pl.LazyFrame:
    return transitions.select(list(SCHEMA))
