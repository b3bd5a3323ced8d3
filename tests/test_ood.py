"""The out-of-distribution detector does not cry wolf on tiles like its training tiles, even when it was
fitted on a handful of annotated tiles (issue 16's review: a model trained from 14 annotated tiles flagged
99.6 % of the mosaic, its own training tiles included)."""

from types import SimpleNamespace

import numpy as np
import torch

from ncm_core.data import synth
from ncm_core.models.factory import build_model
from ncm_core.models.ood import fit_ood, ood_ratio, tile_features
from ncm_core.models.preprocess import InputSpec

SPEC = InputSpec(1, (32, 32))


def _crops(image, n, rng, t=32):
    ys = rng.integers(0, image.shape[0] - t, n)
    xs = rng.integers(0, image.shape[1] - t, n)
    return np.stack([image[y : y + t, x : x + t] for y, x in zip(ys, xs)])


def test_few_training_tiles_give_a_threshold_that_new_tiles_of_the_same_material_pass():
    torch.manual_seed(0)
    model = build_model("resnet10t", 2, in_chans=1).eval()
    rng = np.random.default_rng(0)
    a = synth.sem_frame("NCM333", "pristine", (256, 256), info_bar=0, seed=1)
    b = synth.sem_frame("NCM811", "cycled100", (256, 256), info_bar=0, seed=2)
    x = np.concatenate([_crops(a, 7, rng), _crops(b, 7, rng)])  # 14 annotated tiles, no validation tiles
    y = np.repeat([0, 1], 7)
    cfg, extra = fit_ood(model, x, y, x[:0], SPEC, "cpu", 2)
    bundle = SimpleNamespace(config=SimpleNamespace(ood=cfg), extra=extra)

    def flagged(tiles):
        f = torch.as_tensor(tile_features(model, tiles, SPEC, "cpu"), dtype=torch.float32)
        return float((ood_ratio(bundle, f) > 1).float().mean())

    same = np.concatenate([_crops(a, 100, rng), _crops(b, 100, rng)])
    assert flagged(x) <= 0.15  # the training tiles themselves
    assert flagged(same) <= 0.2  # new tiles of the same two materials: below the widgets' warning share
    assert cfg["calibrated_on"] == "training tiles, out of fold"
    # and it still flags what is nothing like them (for this untrained network: white noise)
    assert flagged(np.random.default_rng(1).integers(0, 255, (50, 32, 32), dtype=np.uint8)) >= 0.9
