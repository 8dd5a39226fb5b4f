"""Checks of a model folder (`trained_model`, `cluster_model`): it loads and answers at its input
size, and it knows the project's classes. A factory, so any model asset gets them in one line;
torch loads inside the check that needs it."""

from collections.abc import Mapping
from typing import Any

from dagster import AssetCheckResult, AssetChecksDefinition, AssetsDefinition, asset_check

from oct_assets.checks.result import check_result, manifest_of
from oct_assets.contracts.errors import OctMLError
from oct_assets.contracts.formats import CLASSES
from oct_assets.contracts.model_info import ModelInfo
from oct_assets.ml.config import TrainConfig
from oct_assets.store.artifact import Artifact


def configured_input_size(config: Mapping[str, Any], info: ModelInfo) -> int:
    """The input size a model asset's salted config asks for. `trained_model`'s and
    `ensemble_model`'s config is a `TrainConfig`'s; `cluster_model` nests it under `training`
    (mode train); a fetched model was configured where it was trained, so its own `model.json`
    says (mode fetch)."""
    training = config.get("training", config)
    if "image_size" in training:
        return int(training["image_size"])
    return TrainConfig.from_saved(info.config).image_size


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
            net, info = load_model(model.path)
            size = info.input.size
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
        expected = (1, len(info.classes))
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
        """`model.json` names the project's classes, in order, and the input size the asset
        was configured with."""
        try:
            info = ModelInfo.read(model.path)
        except OctMLError as exc:
            return check_result([str(exc)])
        configured = configured_input_size(manifest_of(model).config, info)
        size = info.input.size
        problems = []
        if info.classes != CLASSES:
            problems.append(f"classes {list(info.classes)}, expected {list(CLASSES)}")
        if size < 1:
            problems.append(f"input size {size!r} is not a positive integer")
        elif size != configured:
            problems.append(f"input size {size}, but the asset was configured with {configured}")
        return check_result(
            problems,
            metadata={
                "classes": ", ".join(info.classes),
                "input_size": str(size),
                "configured_input_size": configured,
            },
        )

    return [model_loads, model_classes_and_input_size]
