"""The resources the tests run the graph with: the code location's own, less the IO manager
(each test picks in-memory or the real one) and the cluster (its tests bind a real sshd)."""

from oct_assets.definitions import defs

LOCAL_RESOURCES = {k: v for k, v in defs.resources.items() if k not in ("io_manager", "cluster")}
