"""leaderboard: which corpus is most diverse, and is the lead real; one table per probe.

An unpartitioned asset over every probe with results (the default probe first), each over the
datasets measured with that probe's newest settings and weights, read back from DuckDB. The real
corpora come first with their intervals, tied groups and place between the bound datasets; the
calibration sets (bounds, GINC, mixtures) follow in a separate table. The statistics are in
`core.leaderboard`, the tables in `presentation`; this adapter only attaches them.

It and `cross_diversity` refresh by declarative automation once a coefficient lands
(`REFRESH`: some upstream partition updated since the asset was last handled, nothing upstream
in progress), while `dagster dev` (its daemon) runs.
"""

import dagster as dg

from divcoef_assets import presentation
from divcoef_assets.assets.common import CHAIN_VERSION, GROUP, table_metadata
from divcoef_assets.records import LeaderboardRecord, LeaderboardRow
from divcoef_assets.resources import DivcoefResource

REFRESH = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("refresh after a coefficient lands")


@dg.asset(
    group_name=GROUP, kinds={"duckdb"}, deps=["diversity_coefficient"], automation_condition=REFRESH, code_version=CHAIN_VERSION,
    description="Per probe: the real corpora most diverse first, each with its 95% interval, its statistically tied group "
    "(pairwise tests of the difference with the batches' jackknife) and its position between the lower (0) and upper (1) "
    "bound datasets; the calibration sets (bounds, GINC, mixtures) in a separate table. From DuckDB `latest_coefficients`.",
)
def leaderboard(context: dg.AssetExecutionContext, divcoef: DivcoefResource) -> dg.Output[LeaderboardRecord]:
    store = divcoef.store()
    store.ensure_schema()
    fingerprints = presentation.newest_fingerprints(store)
    default = divcoef.registry().default_probe
    probes = sorted(fingerprints, key=lambda p: (p != default, p))
    metadata: dict = {}
    rows: list[LeaderboardRow] = []
    for probe in probes:
        board = presentation.probe_leaderboard(store, probe, fingerprints[probe])
        rows += presentation.leaderboard_rows(probe, board)
        metadata[f"{probe}: verdict"] = dg.MetadataValue.text(presentation.verdict(board))
        metadata[f"{probe}: real corpora"] = table_metadata(presentation.leaderboard_table(board))
        metadata[f"{probe}: calibration sets"] = table_metadata(presentation.calibration_table(board))
        if divcoef.reports and board.corpora:
            metadata[f"{probe}: chart"] = dg.MetadataValue.md(presentation.leaderboard_chart(probe, board))
    if not probes:
        metadata["verdict"] = dg.MetadataValue.text("Nothing audited yet.")
    context.log.info("; ".join(f"{p}: {len([r for r in rows if r.probe == p and r.kind == 'corpus'])} corpora" for p in probes))
    return dg.Output(LeaderboardRecord(tuple((p, fingerprints[p]) for p in probes), tuple(rows)), metadata=metadata)
