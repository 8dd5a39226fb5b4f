"""`python -m oct_assets [--config RUN_CONFIG.yaml]` runs the local graph (`cli/run.py`);
`python -m oct_assets champion | predict SCAN...` are desk commands (`cli/desk.py`) that start
no Dagster run and import no Dagster."""

import sys

from oct_assets.cli.desk import COMMANDS


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in COMMANDS:
        from oct_assets.cli.desk import main as desk

        return desk(argv)
    from oct_assets.cli.run import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
