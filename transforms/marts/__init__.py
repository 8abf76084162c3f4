"""The marts. Each module states NAME, GRAIN, KEY, PARTITION_BY and SCHEMA at its top; the data dictionary is
generated from them (``clientbase docs``), never written twice."""

from transforms.marts import client_month, run_log, unmatched_counterparties

MARTS = (client_month, unmatched_counterparties, run_log)
