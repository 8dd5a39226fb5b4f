import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from oct_assets.contracts.manifest import SaltedManifest
from oct_assets.store.publish import atomic_dir, build_lock, publish_salted, sweep_dead_builds
from oct_assets.store.salt import compute_salt, is_complete, read_manifest

BASE = {"asset": "a", "code_version": "1", "config": {"x": 1}, "upstream": {"up": "abc"}}


def salt_of(**changes: object) -> str:
    args = {**BASE, **changes}
    return compute_salt(args["asset"], args["code_version"], args["config"], args["upstream"])


def test_same_inputs_same_salt() -> None:
    assert salt_of() == salt_of()
    assert salt_of(config={"x": 1}) == salt_of()


def test_config_key_order_does_not_matter() -> None:
    assert salt_of(config={"x": 1, "y": 2}) == salt_of(config={"y": 2, "x": 1})


@pytest.mark.parametrize(
    "change",
    [
        {"asset": "b"},
        {"code_version": "2"},
        {"config": {"x": 2}},
        {"config": {"x": 1, "y": None}},
        {"upstream": {"up": "abd"}},
        {"upstream": {"up": "abc", "other": "x"}},
    ],
)
def test_each_input_changes_the_salt(change: dict) -> None:
    assert salt_of(**change) != salt_of()


def test_atomic_dir_publishes_complete_folder(tmp_path: Path) -> None:
    final = tmp_path / "asset" / "salt"
    manifest = SaltedManifest.new("asset", "salt", "1", {}, {}).to_json()
    with atomic_dir(final, manifest) as tmp:
        (tmp / "out.txt").write_text("result")
        assert not final.exists()
    assert is_complete(final)
    assert (final / "out.txt").read_text() == "result"
    assert read_manifest(final).salt == "salt"
    assert [p.name for p in final.parent.iterdir()] == ["salt"]


def test_the_store_writes_it_last_with_the_summary(tmp_path: Path) -> None:
    final = tmp_path / "a" / "0123456789abcdef"
    manifest = SaltedManifest.new("a", final.name, "1", {"x": 1}, {"up": "s"})

    def build(tmp: Path) -> dict:
        assert not (tmp / "manifest.json").exists()
        (tmp / "out.txt").write_text("done")
        return {"n": 1}

    assert publish_salted(final, manifest, build) == {"n": 1}
    on_disk = json.loads((final / "manifest.json").read_text())
    assert on_disk == {**manifest.to_json(), "n": 1}
    assert read_manifest(final).summary == {"n": 1}


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "asset" / "salt"
    with pytest.raises(RuntimeError), atomic_dir(final, {}) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("boom")
    assert not final.exists()
    assert list(final.parent.iterdir()) == []


def test_killed_writer_leaves_no_complete_looking_folder(tmp_path: Path) -> None:
    final = tmp_path / "asset" / "salt"
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from oct_assets.store.publish import atomic_dir
        with atomic_dir(Path({str(final)!r}), {{}}) as tmp:
            (tmp / "half.bin").write_bytes(b"x" * 1000)
            Path({str(ready)!r}).touch()
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 30
        while not ready.exists():
            assert time.time() < deadline, "writer never started"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not final.exists()
    assert not is_complete(final)
    leftovers = list(final.parent.iterdir())
    assert leftovers and all(p.name.startswith(".") and not is_complete(p) for p in leftovers)

    # The next build of the asset sweeps the dead builder's folder, not a live builder's.
    with atomic_dir(final.parent / "other", {}) as live:
        with atomic_dir(final, {}) as tmp:
            (tmp / "whole.bin").write_bytes(b"y")
        assert live.is_dir()
    assert sorted(p.name for p in final.parent.iterdir()) == ["other", "salt"]
    # A folder nobody holds is dead, whatever host or pid its name states.
    foreign = final.parent / f".salt.tmp-{socket.gethostname()}-2-{proc.pid}-0123abcd"
    foreign.mkdir()
    assert sweep_dead_builds(final.parent) == [foreign] and not foreign.exists()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)"
)
def test_a_build_in_another_pid_namespace_survives_a_sweep(tmp_path: Path) -> None:
    """The builder's pid means nothing in another PID namespace; its lock holds in any."""
    final = tmp_path / "asset" / "salt"
    sweep = (
        "import sys; from pathlib import Path; "
        "from oct_assets.store.publish import sweep_dead_builds; "
        "print(len(sweep_dead_builds(Path(sys.argv[1]))))"
    )
    command = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", sweep]
    with atomic_dir(final, {}) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        out = subprocess.run(
            [*command, str(final.parent)], capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == "0" and tmp.is_dir()
    assert is_complete(final)


def test_concurrent_builders_of_one_salt_take_turns(tmp_path: Path) -> None:
    """The second builder waits for the first, then finds the folder complete."""
    final = tmp_path / "asset" / "salt"
    holding, release = threading.Event(), threading.Event()

    def first() -> None:
        with build_lock(final) as waited:
            assert not waited
            holding.set()
            release.wait(30)
            with atomic_dir(final, {}) as tmp:
                (tmp / "whole.bin").write_bytes(b"x")

    thread = threading.Thread(target=first)
    thread.start()
    assert holding.wait(30)
    threading.Timer(0.3, release.set).start()
    with build_lock(final) as waited:
        assert waited and is_complete(final)
    thread.join()
