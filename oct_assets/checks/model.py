"""Checks of a model folder (`trained_model`, `cluster_model`): it loads and answers at its input
size, and it knows the project's classes. A factory, so any model asset gets them in one line;
torch loads inside the check that needs it."""

import json
from typing import Any

from dagster import AssetCheckResult, AssetChecksDefinition, AssetsDefinition, asset_check

from oct_assets.checks.result import check_result, summary
from oct_assets.contracts.formats import CLASSES, MODEL_JSON
from oct_assets.store.artifact import Artifact


def build_model_checks(model_asset: AssetsDefinition) -> list[AssetChecksDefinition]:
    """`model_loads` and `model_classes_and_input_size` for `model_asset`."""

    @asset_check(asset=model_asset, name="model_loads")
    def model_loads(model: Artifact) -> AssetCheckResult:
        """The weights load into the recorded architecture, are finite, and one blank image at
        the recorded input size gives one finite score per class."""
        import torch

        from oct_assets.ml.nets import to_input
        from oct_assets.ml.predict import load_model

        try:
            net, meta = load_model(model.path)
            size = int(meta["input"]["size"])
            with torch.inference_mode():
                x = to_input(torch.zeros(1, size, size, dtype=torch.uint8), net.in_channels)
                scores = net(x)
            shape = tuple(scores.shape)
            finite = bool(torch.isfinite(scores).all()) and all(
                bool(torch.isfinite(t).all())
                for t in net.state_dict().values()
                if t.is_floating_point()
            )
        except Exception as exc:  # any failure to load is the check's finding, shown in the UI
            return check_result([f"{model.path} does not load: {type(exc).__name__}: {exc}"])
        expected = (1, len(meta["classes"]))
        problems = [] if shape == expected else [f"output {shape}, expected {expected}"]
        if not finite:
            problems.append(f"{model.path} has NaN or infinite weights or outputs")
        return check_result(
            problems,
            metadata={
                "input_size": size,
                "output_shape": str(shape),
                "parameters": sum(p.numel() for p in net.parameters()),
            },
        )

    @asset_check(asset=model_asset, name="model_classes_and_input_size")
    def model_classes_and_input_size(model: Artifact) -> AssetCheckResult:
        """`model.json` names the project's classes, in order, and the input size it was
        configured with."""
        meta: dict[str, Any] = json.loads((model.path / MODEL_JSON).read_text())
        configured = summary(model).get("config", {}).get("image_size")
        size = meta.get("input", {}).get("size")
        problems = []
        if meta.get("classes") != list(CLASSES):
            problems.append(f"classes {meta.get('classes')}, expected {list(CLASSES)}")
        if not isinstance(size, int) or size < 1:
            problems.append(f"input size {size!r} is not a positive integer")
        elif configured is not None and size != configured:
            problems.append(f"input size {size}, but the asset was configured with {configured}")
        return check_result(
            problems,
            metadata={"classes": ", ".join(meta.get("classes") or []), "input_size": str(size)},
        )

    return [model_loads, model_classes_and_input_size]
