"""The Ray cluster as a dagster-ray resource: how a Dagster step connects to Ray and lets go.

`dagster_ray.RayResource` owns the connection's lifecycle (`ray.init` when the step starts, the
disconnect when it ends, also on failure). Two backends:

- `LocalRay` (dagster-ray's own) when no address is configured: `ray.init()` then joins the cluster
  named by `RAY_ADDRESS`, else the latest cluster started on this machine, else starts a local one;
- `RayClusterAt` for an explicit address: `ray://<head>:10001` (Ray Client, from any machine that
  reaches the head) or `<head>:6379` (from a node of the cluster). The cluster is someone else's:
  it is never created or deleted here, only connected to.

Imported only when the Ray execution mode is chosen (it needs the `ray` extra).
"""

from __future__ import annotations

from urllib.parse import urlparse

from dagster_ray import Lifecycle, LocalRay, RayResource


class RayClusterAt(RayResource):
    """A running Ray cluster at `address` (`ray://host:port` or `host:port`)."""

    address: str

    @property
    def host(self) -> str:
        return urlparse(self.address if "://" in self.address else f"ray://{self.address}").hostname or self.address

    @property
    def ray_address(self) -> str:  # type: ignore[override]
        return self.address

    @property
    def name(self) -> str:
        return f"Ray cluster at {self.address}"

    @property
    def created(self) -> bool:
        return True

    @property
    def ready(self) -> bool:
        return True


def cluster_resource(address: str) -> RayResource:
    """The dagster-ray resource for `address` (empty: `LocalRay`); it connects, never deletes."""
    keep = Lifecycle(cleanup="never")
    return RayClusterAt(address=address, lifecycle=keep) if address else LocalRay(lifecycle=keep)
