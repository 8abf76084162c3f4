"""The marts. Each module states NAME, GRAIN, KEY, PARTITION_BY and SCHEMA at its top; the data dictionary is
generated from them (``clientbase docs``), never written twice."""

from transforms.marts import (
    abc_xyz_matrix,
    client_month,
    client_scorecard,
    cohort_retention,
    dependency,
    key_clients,
    ladder_transitions,
    manager_load,
    pareto_summary,
    phase_out_scenarios,
    retention_period,
    run_log,
    segments,
    target_portrait,
    unmatched_counterparties,
    unprofitable_audit,
    whale_curve,
)

MARTS = (client_month, client_scorecard, pareto_summary, whale_curve, unprofitable_audit, phase_out_scenarios,
         abc_xyz_matrix, retention_period, cohort_retention, key_clients, dependency, manager_load,
         target_portrait, ladder_transitions, segments,
         unmatched_counterparties, run_log)
