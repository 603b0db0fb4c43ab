"""`ray start ARGS` for a Ray node that stays on 127.0.0.1, also when it joins a cluster.

Ray binds a node to the address it is given, but where multi-node clusters are enabled it first
replaces 127.0.0.1 by the machine's outward address, and where they are disabled
(`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, which keeps 127.0.0.1) `ray start --address` refuses to
join a node. This runs Ray's own `ray start` with the addresses left as given and joining allowed,
so a head and a second node on one machine (scripts/team.sh) listen on 127.0.0.1 only. The
processes it starts inherit `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` and keep 127.0.0.1 too.
"""

import os
import sys

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

from ray._private import ray_constants, services  # noqa: E402
from ray.scripts.scripts import main  # noqa: E402

ray_constants.ENABLE_RAY_CLUSTER = True  # only the check of `ray start --address` reads it from here on
services.resolve_ip_for_localhost = lambda host: host

if __name__ == "__main__":
    sys.exit(main())
