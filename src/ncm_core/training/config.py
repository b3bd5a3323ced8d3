"""Options of the training tasks: the one home of their defaults and checks.

``train(data, out, lr=3e-3)`` is ``train(data, out, TrainConfig(lr=3e-3))``; the ``ncm`` command, the napari
widgets and the bundles read their defaults from these classes. ``validate()`` raises one
:class:`~ncm_core.errors.NcmError` line for a value that cannot work.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ncm_core.errors import NcmError

if TYPE_CHECKING:
    from ncm_core.data.infobar import BandSpec

Amp = Literal["auto", "off", "bf16", "fp16"]
ClassifyMonitor = Literal["accuracy", "balanced_accuracy", "loss"]
RegressMonitor = Literal["mape", "loss"]
Loss = Literal["mape", "mae", "mse", "huber"]
RegressModel = Literal["cnn", "descriptors", "hybrid", "auto"]
Pruner = Literal["asha", "hyperband", "none"]
RecipeName = Literal["generalise", "basic"]

CLASSIFY_MONITORS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "loss")
REGRESS_MONITORS: tuple[str, ...] = ("mape", "loss")
LOSSES: tuple[str, ...] = ("mape", "mae", "mse", "huber")
REGRESS_MODELS: tuple[str, ...] = ("cnn", "descriptors", "hybrid", "auto")
CURVE_MODELS: tuple[str, ...] = ("descriptors", "cnn", "hybrid")
AMP_CHOICES: tuple[str, ...] = ("auto", "off", "bf16", "fp16")

#: The rule that picks the epoch a bundle keeps, as recorded in its training record.
NO_VALIDATION = "last epoch (no validation data)"


def _check_fraction(name: str, value: float) -> None:
    if not 0 <= value < 1:
        raise NcmError(f"{name} must be at least 0 and below 1, got {value}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise NcmError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


#: The scheduler names timm's ``create_scheduler_v2`` knows (timm.scheduler.scheduler_factory).
SCHEDULERS: tuple[str, ...] = (
    "cosine",
    "tanh",
    "step",
    "multistep",
    "plateau",
    "poly",
    "constant",
    "wsd",
    "rsqrt",
    "none",
)


def _suggest(value: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, sorted(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_positive(name: str, value: float | None, allow_none: bool = False) -> None:
    """One error line unless ``value`` is a finite number above 0 (or None where ``allow_none``)."""
    if value is None and allow_none:
        return
    try:
        ok = math.isfinite(float(value)) and float(value) > 0  # type: ignore[arg-type]
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise NcmError(f"{name} must be a finite number above 0, got {value!r}")


def check_optimizer(name: str) -> None:
    """One error line, with the closest name, unless timm's optimizer registry knows ``name``
    (read as timm reads it: ``lookahead_radam`` is RAdam with Lookahead)."""
    from timm.optim import get_optimizer_info, list_optimizers

    base = str(name).lower().split("_")[-1]
    try:
        get_optimizer_info(base)
    except (ValueError, KeyError):
        raise NcmError(f"unknown optimizer {name!r} (timm's optimizers){_suggest(base, list_optimizers())}") from None


def check_scheduler(name: str) -> None:
    """One error line, with the closest name, unless timm's scheduler factory knows ``name``."""
    if name not in SCHEDULERS:
        raise NcmError(f"unknown scheduler {name!r}; timm's are {', '.join(SCHEDULERS)}{_suggest(name, SCHEDULERS)}")


def _check_common(c: TrainConfig | RegressConfig) -> None:
    """Checks both training tasks share: learning rate, optimizer, scheduler, weight decay."""
    from ncm_core.data.infobar import check_band

    check_positive("learning rate (--lr)", c.lr)
    if not (math.isfinite(c.weight_decay) and c.weight_decay >= 0):
        raise NcmError(f"weight decay must be a finite number of at least 0, got {c.weight_decay}")
    check_optimizer(c.optimizer)
    check_scheduler(c.scheduler)
    check_band(getattr(c, "exclude_rows", None))
    check_positive("pixel size (--pixel-size, micrometres)", getattr(c, "pixel_size", None), allow_none=True)


@dataclass(frozen=True)
class TrainConfig:
    """Training a tile classifier (:func:`ncm_core.training.classify.train`).

    ``tile_size`` None: the tile set's, or 96 px for frames; ``input_size`` None: the tile size.
    ``val_fraction`` is the share of each class's frames held out (0: no validation, the last epoch is
    kept); a tile set brings its own ``val`` split. ``patience`` None or 0: no early stopping.
    ``holdout`` False trains on everything (frames, or a tile set's train + val) for ``epochs`` epochs.

    ``recipe`` ``"generalise"`` (default) or ``"basic"`` (:mod:`ncm_core.training.recipe`); ``standardize``,
    ``balanced``, ``label_smoothing``, ``ema`` and ``tta`` None take the recipe's choice, a value overrides
    it; ``augment=True`` is the recipe's selection. ``ema_decay`` None: an average over about one epoch.
    ``context_um`` (micrometres, frames): crops cover this width, cut at ``context_um / pixel_size`` px
    (the pixel size from ``pixel_size`` or the frames' metadata) and resized to ``input_size``.
    """

    architecture: str = "efficientnet_b0"
    tile_size: int | None = None
    input_size: int | None = None
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    momentum: float = 0.9
    scheduler: str = "cosine"
    warmup_epochs: int = 1
    val_fraction: float = 0.25
    crops_per_image: int = 32
    val_crops_per_image: int = 16
    exclude_rows: BandSpec = "detect"  # frames: "detect" skips an information bar where found (ncm_core.data.infobar)
    augment: bool | str | Iterable[str] = True
    normalize: bool = False
    pretrained: str | Path | None = None
    patience: int | None = None
    monitor: ClassifyMonitor = "accuracy"
    amp: Amp = "auto"
    resume: bool = True
    ood: bool = True
    holdout: bool = True
    seed: int = 0
    device: str = "auto"
    pixel_size: float | None = None
    overwrite: bool = False
    recipe: RecipeName = "generalise"
    standardize: bool | None = None
    balanced: bool | None = None
    label_smoothing: float | None = None
    ema: bool | None = None
    ema_decay: float | None = None
    tta: bool | None = None
    context_um: float | None = None

    #: what an explicit None keyword stands for (see ncm_core.options.merge_options): no augmentation
    NONE_MEANS: ClassVar[dict[str, Any]] = {"augment": "none"}

    def validate(self) -> TrainConfig:
        from ncm_core.training.recipe import RECIPES

        _check_choice("recipe (--recipe)", self.recipe, tuple(RECIPES))
        if self.label_smoothing is not None and not 0 <= self.label_smoothing < 1:
            raise NcmError(f"label smoothing must be at least 0 and below 1, got {self.label_smoothing}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise NcmError(f"EMA decay must be above 0 and below 1, got {self.ema_decay}")
        check_positive("context (--context-um, micrometres)", self.context_um, allow_none=True)
        if self.context_um is not None and self.tile_size is not None:
            raise NcmError("give the crop context either in micrometres (--context-um) or in pixels (--tile), not both")
        if self.epochs < 1 or self.batch_size < 1:
            raise NcmError(f"epochs and batch size must be positive (got {self.epochs}, {self.batch_size})")
        _check_choice("monitor", self.monitor, CLASSIFY_MONITORS)
        _check_choice("amp", self.amp, AMP_CHOICES)
        if self.tile_size is not None and self.tile_size < 8:
            raise NcmError(f"tile size must be at least 8 px, got {self.tile_size}")
        _check_fraction("validation fraction", self.val_fraction)
        if self.crops_per_image < 1 or self.val_crops_per_image < 1:
            raise NcmError("crops per image must be at least 1")
        _check_common(self)
        return self


@dataclass(frozen=True)
class RegressConfig:
    """Training regressors on cross-section crops (``train_regressor``, ``cross_validate``, ``fit_regressor``).

    ``input_size`` (height, width, or ``"56x168"``) None: the crops' own size. ``val_fraction`` is the
    share of mosaics (or ``split_by`` groups) held out for early stopping (0: none, the last epoch is
    kept). ``patience`` 0 or an explicit ``patience=None`` turns early stopping off; ``augment=None`` is
    no augmentation. ``folds`` is used by cross-validation only.

    ``model`` (:mod:`ncm_core.training.regression_models`): ``cnn`` the image network alone,
    ``descriptors`` ridge regression on crop descriptors, ``hybrid`` the CNN's features and the descriptors
    in one head on top of the descriptor model, ``auto`` (the default) all three on the same grouped folds,
    keeping the best by MAPE per mosaic. Why ``auto``: on a few dozen sections of a new microstructure a
    CNN alone may learn less than porosity and thickness say, and only grouped cross-validation tells;
    without folds (``train_regressor``) ``auto`` trains the hybrid, which starts from the descriptor
    model and can only add what the images hold, and keeps the descriptor model instead when it is
    better on the validation mosaics.

    ``curve``: the models of cross-validation's learning curve. ``descriptors`` (the default, with the
    training mean) costs well under a second per point; ``cnn`` and ``hybrid`` cost one training run per
    point on the first folds (:mod:`ncm_core.training.learning_curve`), so they are asked for by name.
    """

    architecture: str = "ncm_vgg"
    model: RegressModel = "auto"
    curve: tuple[str, ...] | list[str] | str = ("descriptors",)
    input_size: Any = None
    groups: tuple[str, ...] | list[str] = ()
    target_columns: tuple[str, ...] | list[str] | None = None
    split_by: str | None = None
    val_fraction: float = 0.2
    holdout: bool = True
    folds: int = 5
    epochs: int = 100
    batch_size: int = 38
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup: float = 0.1
    optimizer: str = "lookahead_radam"
    scheduler: str = "cosine"
    weight_decay: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    loss: Loss = "mape"
    monitor: RegressMonitor = "mape"
    patience: int | None = 20
    augment: bool | str | Iterable[str] = True
    max_shift: float = 0.1
    max_rotate: float = 10.0
    adversarial: float = 0.0
    normalize: bool = False
    drop_rate: float | None = None
    pretrained: str | Path | None = None
    amp: Amp = "auto"
    ood: bool = True
    resume: bool = True
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False

    #: what an explicit None keyword stands for: no early stopping, no augmentation
    NONE_MEANS: ClassVar[dict[str, Any]] = {"patience": 0, "augment": "none"}

    def validate(self) -> RegressConfig:
        if self.epochs < 1 or self.batch_size < 2:
            raise NcmError(
                f"epochs must be positive and the batch size at least 2 (got {self.epochs}, {self.batch_size})"
            )
        _check_choice("monitor", self.monitor, REGRESS_MONITORS)
        _check_choice("loss", self.loss, LOSSES)
        _check_choice("model", self.model, REGRESS_MODELS)
        curve = tuple(v.strip() for v in self.curve.split(",")) if isinstance(self.curve, str) else tuple(self.curve)
        if not curve:
            raise NcmError(f"the learning curve needs at least one of {', '.join(CURVE_MODELS)}")
        for m in curve:
            _check_choice("learning-curve model", m, CURVE_MODELS)
        object.__setattr__(self, "curve", curve)
        _check_choice("amp", self.amp, AMP_CHOICES)
        if not 0 <= self.warmup < 1:
            raise NcmError(f"warm-up must be a fraction of the steps in [0, 1), got {self.warmup}")
        if self.adversarial < 0 or self.l1 < 0 or self.l2 < 0:
            raise NcmError("adversarial noise and weight penalties must not be negative")
        _check_fraction("validation fraction", self.val_fraction)
        _check_common(self)
        if not (math.isfinite(self.min_lr) and self.min_lr >= 0):
            raise NcmError(f"minimum learning rate (--min-lr) must be a finite number of at least 0, got {self.min_lr}")
        return self

    @property
    def early_stopping(self) -> int | None:
        """Patience in epochs, or None when early stopping is off."""
        return self.patience if self.patience else None


@dataclass(frozen=True)
class TuneConfig:
    """Hyperparameter search of :func:`ncm_core.training.tune.tune` (see docs/tuning.md).

    ``space`` None: :data:`ncm_core.training.tune_space.DEFAULT_SPACE`. ``train_kwargs`` are fixed
    arguments of ``train`` (tile size, excluded rows, device, ...). ``scheduler`` is a dask address
    (``local:N`` or ``tcp://host:8786``); ``sampler`` an Optuna sampler (default TPE seeded by ``seed``).
    """

    space: str | Path | dict[str, Any] | None = None
    n_trials: int = 20
    max_epochs: int = 20
    min_epochs: int = 1
    reduction_factor: int = 3
    pruner: Pruner = "asha"
    n_jobs: int = 1
    scheduler: Any = None
    resume: bool = False
    seed: int = 0
    train_kwargs: dict[str, Any] | None = None
    sampler: Any = None
    retrain: bool = False

    def validate(self) -> TuneConfig:
        if self.max_epochs < 1 or self.min_epochs > self.max_epochs:
            raise NcmError(
                f"epochs per trial must satisfy 1 <= minimum <= maximum (got {self.min_epochs}, {self.max_epochs})"
            )
        if self.n_trials < 1 or self.n_jobs < 1:
            raise NcmError(f"trials and jobs must be positive (got {self.n_trials}, {self.n_jobs})")
        _check_choice("pruner", self.pruner, ("asha", "hyperband", "none"))
        if (self.train_kwargs or {}).get("val_fraction") == 0:
            raise NcmError("tuning compares trials by their validation accuracy; val_fraction must be above 0")
        return self


Method = Literal["simclr", "byol", "vicreg"]
METHODS: tuple[str, ...] = ("simclr", "byol", "vicreg")


@dataclass(frozen=True)
class PretrainConfig:
    """Self-supervised pretraining of a backbone (:func:`ncm_core.training.pretrain.pretrain`).

    ``crop_size`` is the side in source pixels of the crops drawn from frames or mosaics; two augmented
    views of each crop are resized to ``input_size`` (None: the crop size). ``method``: ``simclr``
    (contrastive), ``byol`` or ``vicreg`` (non-contrastive), all from lightly. ``probe``: a labelled folder
    (class sub-folders of frames) scored by k-NN on the backbone's features after every epoch.
    """

    architecture: str = "resnet18"
    method: Method = "simclr"
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    crop_size: int = 224
    input_size: int | None = 112
    crops_per_image: int = 16
    tiles_per_mosaic: int = 256
    exclude_rows: BandSpec = "detect"
    probe: str | Path | None = None
    probe_crops: int = 8
    knn: int = 10
    amp: Amp = "auto"
    resume: bool = True
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False

    def validate(self) -> PretrainConfig:
        from ncm_core.data.infobar import check_band

        _check_choice("method", self.method, METHODS)
        _check_choice("amp", self.amp, AMP_CHOICES)
        if self.epochs < 1 or self.batch_size < 2:
            raise NcmError(
                f"epochs must be positive and the batch size at least 2 (got {self.epochs}, {self.batch_size})"
            )
        if self.crop_size < 16 or (self.input_size is not None and self.input_size < 16):
            raise NcmError(f"crop and input sizes must be at least 16 px (got {self.crop_size}, {self.input_size})")
        if min(self.crops_per_image, self.tiles_per_mosaic, self.probe_crops, self.knn) < 1:
            raise NcmError("crops per image, tiles per mosaic, probe crops and k must be at least 1")
        check_positive("learning rate (--lr)", self.lr)
        check_band(self.exclude_rows)
        return self
