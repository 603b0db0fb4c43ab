"""The project's definitions with batch embeddings computed on a Ray cluster.

    RAY_ADDRESS=ray://<head>:10001 dagster dev -h 127.0.0.1 -m divcoef_assets.ray_definitions

Everything as in `divcoef_assets.definitions`, except that `DivcoefResource.embedding_backend` is
"ray" and task2vec_embeddings takes a slot of the `gpu` pool (not `torch`). The cluster is the one
`ray.init()` finds (`RAY_ADDRESS`), or set the resource's `ray_address` in the run config. Importing
this module imports neither Ray nor dagster-ray; a run fails with how to install them if missing.
"""

from __future__ import annotations

from divcoef_assets.definitions import build_definitions

defs = build_definitions(embedding_backend="ray")
