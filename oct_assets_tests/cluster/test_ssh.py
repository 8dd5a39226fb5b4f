"""The SSH session without a server: one retry layer, and the arrows of the cluster library."""

from pathlib import Path

import pytest

from oct_assets.cluster.errors import ClusterConnectionError


def test_nested_operations_do_not_multiply_attempts() -> None:
    """An operation inside another's retried `op` runs once; the outer layer owns the retries."""
    from oct_assets.cluster.ssh import SSHSession
    from oct_assets.cluster.types import SSHSettings

    session = SSHSession(SSHSettings(host="h", username="u", retries=2, retry_backoff_s=0))
    calls: list[str] = []

    def inner() -> None:
        calls.append("inner")
        raise EOFError("dropped")

    with pytest.raises(ClusterConnectionError, match="after 3 attempt"):
        session.retrying("outer", lambda: session.retrying("inner", inner))
    assert calls == ["inner"] * 3  # not 3 x 3


def test_ssh_never_imports_transfer_and_cluster_never_imports_dagster() -> None:
    import ast

    import oct_assets.cluster as package

    below_transfer = {"ssh.py", "auth.py", "sftp.py", "remote_files.py", "errors.py", "types.py"}
    modules = sorted(Path(package.__file__).parent.glob("*.py"))
    assert below_transfer <= {m.name for m in modules}
    for module in modules:
        tree = ast.parse(module.read_text())
        imported = {
            n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
        } | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        if module.name in below_transfer:
            assert not imported & {"oct_assets.cluster.transfer", "oct_assets.cluster.staging"}
        assert not any(m.split(".")[0] == "dagster" for m in imported), module.name
