"""Training configuration: one frozen dataclass that validates itself and round-trips JSON."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from oct_assets.contracts.settings import field_range, setting

ARCHITECTURES = ("compact", "seed", "plain")
AUGMENTS = ("affine", "light", "none")
DEVICES = ("auto", "cpu", "cuda")
FITS = ("crop", "resize", "band")
RETIRED_FIELDS = ("data_path",)  # in older model.json files; loading a model ignores them
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU has bf16 instructions (Linux `/proc/cpuinfo` flags); None if unknown.
    Without them bf16 autocast is emulated: measured 17x slower than float32 on a Zen 2."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split()}
    return any(f in flags for f in BF16_CPU_FLAGS) if flags else None


@dataclass(frozen=True)
class TrainConfig:
    """Everything that changes the trained weights, so it can be hashed into an asset's salt.

    Defaults make the synthetic demo fast (well under 30 s on 2 CPU cores for ~200 images);
    see `REAL_DATA_DEFAULTS` for the recipe used on real scans. Each field says what it means
    and which values it takes (`setting`).
    """

    architecture: str = setting(
        "compact",
        '"compact" (grayscale CNN with GAP, the default), "plain" (VGG-style grayscale CNN with '
        "GAP, the real-data preset's) or \"seed\" (port of the seed's Keras network, 3-channel "
        "input).",
        choices=ARCHITECTURES,
    )
    epochs: int = setting(
        12, "maximum number of epochs; early stopping may end sooner.", low=1, high=10_000
    )
    image_size: int = setting(
        64,
        "square network input side in pixels (the decode cache is keyed by it).",
        low=1,
        high=1024,
    )
    batch_size: int = setting(
        32,
        "images per optimiser step over all data-parallel ranks together (the global batch; "
        "each of N torchrun ranks takes batch_size / N of it), so a recipe means the same at "
        "any world size; it must be a multiple of the world size.",
        low=1,
        high=4096,
    )
    learning_rate: float = setting(
        3e-3, "peak learning rate (linear warm-up, then cosine decay).", low=0, high=10
    )
    seed: int = setting(
        0,
        "seeds weights, the validation split, shuffling and augmentation.",
        low=0,
        high=2**32 - 1,
    )
    device: str = setting(
        "auto", '"auto" picks CUDA when available, else CPU with every core.', choices=DEVICES
    )
    amp: bool = setting(
        True,
        "on CUDA, mixed precision (fp16 autocast with gradient scaling); the CPU ignores it "
        "(see cpu_bf16).",
    )
    weight_decay: float = setting(1e-4, "AdamW decoupled weight decay.", low=0, high=10)
    val_fraction: float = setting(
        0.15,
        "share of train images (whole patients) held out for early stopping; 0 disables "
        "validation and keeps the last epoch.",
        low=0,
        high=1,
    )
    patience: int = setting(
        0,
        "epochs without a better validation score before stopping; 0 never stops.",
        low=0,
        high=10_000,
    )
    label_smoothing: float = setting(0.05, "cross-entropy label smoothing.", low=0, high=1)
    width: int = setting(
        16,
        "channel count of the compact net's first block (doubles per block, capped at 8x).",
        low=1,
        high=256,
    )
    blocks: int = setting(
        4,
        "number of conv blocks of the compact net (each halves the resolution).",
        low=1,
        high=8,
    )
    dropout: float = setting(0.1, "dropout before the classifier.", low=0, high=1)
    pool_power: float = setting(
        1.0,
        "exponent of the compact net's generalised-mean pooling: 1 is global average pooling; "
        "larger values lean toward the maximum, so a single small lesion (a cyst, a druse) is "
        "not averaged away.",
        low=1,
        high=64,
    )
    fit: str = setting(
        "resize",
        'how a scan becomes the square input: "resize" squeezes the whole scan, "band" keeps '
        "the whole width but only the band of rows holding the retina (neither depends on the "
        'scan\'s width), "crop" keeps the central square (width-dependent: for square '
        "synthetic scans).",
        choices=FITS,
    )
    augment: str = setting(
        "affine",
        '"affine": flips, small zooms, shifts, tilts and stretches, gamma and contrast jitter; '
        '"light": flips, brightness and contrast jitter only; "none".',
        choices=AUGMENTS,
    )
    crop_size: int = setting(
        0,
        "side of the random square crop taken from each training input (the network sees the "
        "centre crop when predicting); 0 uses the whole image_size input.",
        low=0,
        high=1024,
    )
    warmup: float = setting(
        0.15,
        "share of the steps over which the learning rate warms up linearly, before the "
        "cosine decay.",
        low=0,
        high=0.9,
    )
    tta_flip: bool = setting(False, "average predictions over the image and its horizontal mirror.")
    balanced_priors: bool = setting(
        False,
        "after training, subtract log(class share of the training scans) from the classifier's "
        "bias, so the model predicts as if the four classes were equally common (logit "
        "adjustment): a rare training class (DRUSEN) is no longer read as a common one; no "
        "effect on a balanced sample. Every reader of the model (predict, inbox, export, "
        "ensemble) gets it, as it lives in the weights.",
    )
    cpu_bf16: bool = setting(
        False,
        "train under bf16 autocast on the CPU (convolutions in bfloat16, ~4x faster where the "
        "CPU has bf16 instructions; still deterministic). The graph's training assets train "
        "float32 on a CPU without them (emulated bf16 is ~17x slower) and salt what ran. "
        "Prediction stays float32.",
    )
    decode_workers: int = setting(
        0, "processes for filling the decode cache; 0 means one per core.", low=0, high=1024
    )
    threads: int = setting(
        0,
        "torch CPU threads per process; 0 shares the usable cores among a node's ranks.",
        low=0,
        high=1024,
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            expected = {"int": int, "float": (int, float), "str": str, "bool": bool}[f.type]
            # bool is an int subclass: reject it where a number is expected, and vice versa.
            if isinstance(value, bool) != (f.type == "bool") or not isinstance(value, expected):
                raise ValueError(f"TrainConfig.{f.name} must be {f.type}, got {value!r}")
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise ValueError(
                    f"TrainConfig.{f.name} must be one of {', '.join(choices)}; got {value!r}"
                )
            bounds = field_range(f)
            if bounds is not None:
                if not math.isfinite(value):
                    raise ValueError(f"TrainConfig.{f.name} must be a finite number, got {value!r}")
                if not bounds[0] <= value <= bounds[1]:
                    raise ValueError(
                        f"TrainConfig.{f.name} must be in [{bounds[0]}, {bounds[1]}], got {value!r}"
                    )
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate}")
        if self.crop_size >= self.image_size:
            raise ValueError(
                f"TrainConfig.crop_size={self.crop_size} must be below image_size="
                f"{self.image_size} (0 disables cropping)"
            )
        for name in ("val_fraction", "label_smoothing", "dropout"):
            if not getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be in [0, 1), got {getattr(self, name)}")

    def for_this_cpu(self) -> TrainConfig:
        """This config as this machine should train it: `cpu_bf16` dropped where the CPU has no
        bf16 instructions (bf16 is emulated there, measured 17x slower than float32 on a Zen 2;
        on CUDA the flag does nothing). The graph salts the result, so a salt names what ran."""
        if self.cpu_bf16 and cpu_has_bf16() is False:
            return dataclasses.replace(self, cpu_bf16=False)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a (partial) dict; unknown keys raise ValueError naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig key(s): {', '.join(unknown)}")
        values = dict(d)
        for f in fields(cls):
            # JSON/YAML write 1e-3 as float but 3 as int; accept an int for a float field.
            value = values.get(f.name)
            if f.type == "float" and isinstance(value, int) and not isinstance(value, bool):
                values[f.name] = float(value)
        return cls(**values)

    @classmethod
    def from_saved(cls, d: dict[str, Any]) -> TrainConfig:
        """The config a model.json records, also one an older version wrote: model folders
        never change, so fields since retired are dropped and `augment` (a bool before it
        became a choice) is mapped. User settings go through the strict `from_dict`."""
        values = {k: v for k, v in d.items() if k not in RETIRED_FIELDS}
        if isinstance(values.get("augment"), bool):
            values["augment"] = "affine" if values["augment"] else "none"
        return cls.from_dict(values)


# Recipe for real OCT2017 scans (the plain CNN, its first conv at stride 2): the whole scan
# squeezed to 180 px, random 160-px crops (the centre one when predicting), flips, brightness
# and contrast jitter; five VGG blocks of 24 to 256 channels whose first conv has stride 2;
# global average pooling, dropout 0.3; AdamW 3e-3 (weight decay 1e-2) with 30% warm-up then
# cosine decay, batches of 32 for 40 epochs, label smoothing 0.1, bf16 training on the CPU. All
# train images are used and the last epoch is kept; the classifier's bias is then balanced
# (`balanced_priors`: predicts as if the classes were equally common). Chosen on pooled
# accuracy over 3 patient-grouped folds of all 463 real scans (`scripts/recipe_cv.py`), and
# balanced_priors on both shared folders; the measurements are in docs/training.md.
REAL_DATA_DEFAULTS: dict[str, Any] = {
    "architecture": "plain",
    "epochs": 40,
    "image_size": 180,
    "crop_size": 160,
    "batch_size": 32,
    "learning_rate": 3e-3,
    "warmup": 0.3,
    "weight_decay": 1e-2,
    "val_fraction": 0.0,
    "label_smoothing": 0.1,
    "width": 24,
    "blocks": 5,
    "dropout": 0.3,
    "fit": "resize",
    "augment": "light",
    "tta_flip": False,
    "cpu_bf16": True,
    "balanced_priors": True,
}


def real_data_config(**overrides: Any) -> TrainConfig:
    """The recommended configuration for real scans, optionally overridden."""
    return TrainConfig.from_dict({**REAL_DATA_DEFAULTS, **overrides})
