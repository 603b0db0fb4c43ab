"""The project's definitions with batch embeddings computed on a Ray cluster.

    DIVCOEF_RAY_ADDRESS=ray://<head>:10001 dagster dev -h 127.0.0.1 -m divcoef_assets.ray_definitions

Everything as in `divcoef_assets.definitions`, except that `DivcoefResource.embedding_backend` is
"ray" and task2vec_embeddings takes a slot of the `gpu` pool (not `torch`). The cluster is the
resource's `ray_address` (run config), else `DIVCOEF_RAY_ADDRESS`, else the one `ray.init()` finds
(`RAY_ADDRESS`). README "Running it for a team" runs the daemon on it. Importing
this module imports neither Ray nor dagster-ray; a run fails with how to install them if missing.
"""

from __future__ import annotations

from divcoef_assets.definitions import build_definitions

defs = build_definitions(embedding_backend="ray")
