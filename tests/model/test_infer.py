"""Inference: CAM and LayerCAM equal hand computations, Grad-CAM shape and range, inputs
untouched.

Tolerances. The hand computations run in float64 (``_reference``), so they do not depend on the
CPU's kernels; the classifier runs in float32 with channels-last convolutions, whose oneDNN
kernels (AVX2, AVX-512, AMX) sum in different orders. Each comparison below says what bounds the
difference. CI runs this module on the default kernels and again under
``ONEDNN_MAX_CPU_ISA=AVX2`` (see ``.ci/run``).

- ``FP32_MAP_ATOL`` for a map read from the classifying pass (CAM, ``layercam4``) and for
  probabilities: the raw map is a sum of 512 products, float32's relative rounding is 6e-8 per
  operation, and min-max normalisation divides the error by the map's range, which on these
  untrained networks is about 0.7 of the sum of its terms' magnitudes (measured). Worst
  difference measured against float64 on AVX2 and AVX-512 kernels, 1 and 2 threads: 2.1e-6 for
  maps, 2.2e-7 for probabilities; the bound is 50 times the larger.
- ``GRADIENT_MAP_ATOL`` for ``layercam``, whose layer2 map is a gradient through the network's
  ReLUs: a pre-activation within rounding of zero switches a gradient path on or off, which moves
  a patch of the normalised map whatever the summation order. Measured against float64: 4.4e-4
  on about 1,280 of 12,288 pixels of one crop, the same on AVX2 and AVX-512 kernels (the float32
  hand computation the test used before agreed with the AVX2 kernels and missed ``atol=1e-4``
  on the AVX-512 ones). The bound is 4.5 times that and still 200 times smaller than the
  difference between two of the methods (0.43 between ``layercam`` and ``layercam4`` here), so a
  wrong formula fails; the median pixel must also agree to ``FP32_MAP_ATOL``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision import models

from auditor.errors import UsageError
from auditor.model.bundle import ModelBundle, create_untrained_bundle, load_bundle
from auditor.model.cam import resnet_features
from auditor.model.infer import Classifier, preprocess_crops, resolve_precision, select_device

# compares numbers between code paths: CI reruns it on AVX2 kernels and with bf16 for auto
pytestmark = pytest.mark.numerics


@pytest.fixture(scope="module")
def resnet_classifier(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    path = create_untrained_bundle(tmp_path_factory.mktemp("b") / "r", "resnet18", input_size=64)
    return Classifier(load_bundle(path), torch.device("cpu"), precision="fp32", heatmap="cam")


FP32_MAP_ATOL = 1e-4
GRADIENT_MAP_ATOL = 2e-3


def _reference(bundle: ModelBundle, batch: torch.Tensor) -> tuple[models.ResNet, torch.Tensor]:
    """The bundle's ResNet and a batch in float64: hand computations free of kernel order."""
    net = bundle.build_model().double()
    assert isinstance(net, models.ResNet)
    return net, batch.double()


def _crops(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(3).random((n, size, size), dtype=np.float32)


def test_cam_equals_features_times_fracture_weights(resnet_classifier: Classifier) -> None:
    crops = _crops(3, 64)
    batch = resnet_classifier.preprocess(crops)
    pred = resnet_classifier.predict(batch, cam=True)

    net, ref = _reference(resnet_classifier.bundle, batch)
    with torch.no_grad():
        feats = resnet_features(net, ref)  # (N, 512, 2, 2)
        w = net.fc.weight[1]
        hand = (feats * w[None, :, None, None]).sum(dim=1)
        expected = _minmax(hand).numpy()
        probs = torch.softmax(net(ref), dim=1)[:, 1].numpy()
        # CAM identity: the fracture logit is the mean of the raw CAM plus the bias (float64
        # on both sides: only summation order separates them)
        logit = net(ref)[:, 1]
        torch.testing.assert_close(
            hand.mean(dim=(1, 2)) + net.fc.bias[1], logit, rtol=1e-10, atol=1e-10
        )

    assert pred.cams is not None and pred.cams.shape == (3, 64, 64)
    np.testing.assert_allclose(pred.cams, expected, atol=FP32_MAP_ATOL)
    np.testing.assert_allclose(pred.probs, probs, atol=FP32_MAP_ATOL)
    assert pred.probs.dtype == np.float32 and pred.cams.dtype == np.float32


def test_predict_without_cam(resnet_classifier: Classifier) -> None:
    pred = resnet_classifier.predict(resnet_classifier.preprocess(_crops(2, 64)), cam=False)
    assert pred.cams is None and pred.probs.shape == (2,)


def test_caller_arrays_are_not_mutated(resnet_classifier: Classifier) -> None:
    crops = _crops(2, 64)
    crops_before = crops.copy()
    batch = resnet_classifier.preprocess(crops)
    batch_before = batch.clone()
    resnet_classifier.predict(batch)
    np.testing.assert_array_equal(crops, crops_before)
    torch.testing.assert_close(batch, batch_before, rtol=0, atol=0)


def test_preprocess_normalises_with_card_statistics(resnet_classifier: Classifier) -> None:
    card = resnet_classifier.card
    x = preprocess_crops(np.full((1, 64, 64), 0.5, np.float32), card)
    assert x.shape == (1, 3, 64, 64)
    for c in range(3):
        assert float(x[0, c, 0, 0]) == pytest.approx((0.5 - card.mean[c]) / card.std[c], rel=1e-6)
    with pytest.raises(ValueError, match="shape"):
        preprocess_crops(np.zeros((1, 32, 32), np.float32), card)


def test_vgg_gradcam_shape_range_and_hooks_removed(tmp_path: Path) -> None:
    bundle = load_bundle(create_untrained_bundle(tmp_path / "v", "vgg16", input_size=32))
    clf = Classifier(bundle, torch.device("cpu"), precision="fp32")
    pred = clf.predict(clf.preprocess(_crops(2, 32)), cam=True)
    assert pred.cams is not None and pred.cams.shape == (2, 32, 32)
    assert pred.cams.min() >= 0.0 and pred.cams.max() <= 1.0
    assert pred.probs.shape == (2,) and np.all((pred.probs >= 0) & (pred.probs <= 1))
    assert all(not m._forward_hooks for m in clf.net.modules())


def test_bf16_autocast_runs_on_cpu(resnet_classifier: Classifier) -> None:
    clf = Classifier(resnet_classifier.bundle, torch.device("cpu"), "bf16", heatmap="cam")
    assert "bf16" in clf.describe()
    fp32 = resnet_classifier.predict(resnet_classifier.preprocess(_crops(2, 64)))
    bf16 = clf.predict(clf.preprocess(_crops(2, 64)))
    # bf16 keeps 8 significant bits (relative rounding 2**-9 = 0.2 %) per operation through 18
    # layers; softmax probabilities of an untrained net sit near 0.5, where dp/dlogit = 0.25,
    # so 0.05 allows a logit error of 0.2. Measured: 2.6e-3 with AVX-512 BF16, 1.7e-3 emulated
    # on AVX2 kernels.
    np.testing.assert_allclose(bf16.probs, fp32.probs, atol=0.05)


def test_device_and_precision_choices() -> None:
    assert select_device("cpu") == torch.device("cpu")
    assert resolve_precision(torch.device("cpu"), "fp32") == "fp32"
    assert resolve_precision(torch.device("cpu"), "auto") in ("bf16", "fp32")
    with pytest.raises(UsageError, match="unknown device"):
        select_device("tpu")
    with pytest.raises(UsageError, match="unknown precision"):
        resolve_precision(torch.device("cpu"), "int4")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA"):
            select_device("cuda")


def test_preprocess_follows_the_cards_crop_normalisation(resnet_classifier: Classifier) -> None:
    import dataclasses

    card = dataclasses.replace(resnet_classifier.card, crop_normalisation="percentile")
    dim = np.random.default_rng(1).random((2, 64, 64), dtype=np.float32) * 0.1 + 0.45
    x = preprocess_crops(dim, card)
    # stretched to the full range before the ImageNet statistics
    assert float(x[:, 0].min()) == pytest.approx((0.0 - card.mean[0]) / card.std[0], rel=1e-5)
    assert float(x[:, 0].max()) == pytest.approx((1.0 - card.mean[0]) / card.std[0], rel=1e-5)


def test_finer_feature_stride_gives_finer_cams(tmp_path: Path) -> None:
    """At stride 8 a 64 px crop has an 8 x 8 CAM, upsampled like the 2 x 2 one."""
    bundle = load_bundle(create_untrained_bundle(tmp_path / "s8", input_size=64, feature_stride=8))
    clf = Classifier(bundle, torch.device("cpu"), "fp32", heatmap="cam")
    batch = clf.preprocess(_crops(2, 64))
    pred = clf.predict(batch, cam=True)
    net, ref = _reference(bundle, batch)
    with torch.no_grad():
        feats = resnet_features(net, ref)
        assert feats.shape[-2:] == (8, 8)
        hand = (feats * net.fc.weight[1][None, :, None, None]).sum(dim=1)
        torch.testing.assert_close(
            hand.mean(dim=(1, 2)) + net.fc.bias[1], net(ref)[:, 1], rtol=1e-10, atol=1e-10
        )
    assert pred.cams is not None
    np.testing.assert_allclose(pred.cams, _minmax(hand).numpy(), atol=FP32_MAP_ATOL)


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    up = F.interpolate(maps[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    lo = up.flatten(1).min(1).values[:, None, None]
    hi = up.flatten(1).max(1).values[:, None, None]
    return (up - lo) / (hi - lo)


def _hand_layercam(net: models.ResNet, batch: torch.Tensor) -> torch.Tensor:
    """layer2 x layer4 LayerCAM of one batch, by forward hooks and autograd on the whole net."""
    acts: dict[str, torch.Tensor] = {}
    handles = [
        getattr(net, name).register_forward_hook(
            lambda _m, _i, out, name=name: acts.__setitem__(name, out)
        )
        for name in ("layer2", "layer4")
    ]
    x = batch.clone().requires_grad_(True)
    logits = net(x)
    for handle in handles:
        handle.remove()
    g2, g4 = torch.autograd.grad(logits[:, 1].sum(), (acts["layer2"], acts["layer4"]))
    with torch.no_grad():
        m2 = (torch.relu(g2) * acts["layer2"]).sum(1)
        m4 = (torch.relu(g4) * acts["layer4"]).sum(1)
        # at the last stage the gradient is the fc weight / (h * w): CAM over positive weights
        pos = torch.relu(net.fc.weight[1])[None, :, None, None]
        hw = m4.shape[-1] * m4.shape[-2]
        # float64 on both sides (the caller passes a float64 net): only summation order differs
        torch.testing.assert_close(m4 * hw, (acts["layer4"] * pos).sum(1), rtol=1e-10, atol=1e-10)
        return _minmax(_minmax(m2) * _minmax(m4))


def _np_shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move the content of (..., H, W) arrays by (dy, dx), repeating edges (numpy's own pad)."""
    h, w = a.shape[-2:]
    pad = [(0, 0)] * (a.ndim - 2) + [(max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0))]
    p = np.pad(a, pad, mode="edge")
    return p[..., max(-dy, 0) : max(-dy, 0) + h, max(-dx, 0) : max(-dx, 0) + w]


def test_translate_moves_content_and_repeats_edges() -> None:
    from auditor.model.cam import translate

    x = torch.arange(2 * 1 * 5 * 6, dtype=torch.float32).reshape(2, 1, 5, 6)
    for dy, dx in ((0, 0), (2, 0), (0, 3), (-1, 2), (4, -3)):
        np.testing.assert_array_equal(translate(x, dy, dx).numpy(), _np_shift(x.numpy(), dy, dx))
    moved = translate(x, 1, 2)
    assert moved[0, 0, 1, 2] == x[0, 0, 0, 0]  # content moved down 1, right 2


def test_layercam_equals_hooked_gradients_times_activations(tmp_path: Path) -> None:
    """LayerCAM by hand: forward hooks on layer2 and layer4, the fracture logit's gradient, its
    positive part times the activation summed over channels, upsampled, normalised, multiplied;
    then shift-and-stitch: the crop moved by (0, 0) and (4, 4) pixels, each map moved back,
    averaged."""
    from auditor.model.cam import STITCH_SHIFTS

    bundle = load_bundle(create_untrained_bundle(tmp_path / "s8", input_size=64, feature_stride=8))
    clf = Classifier(bundle, torch.device("cpu"), "fp32", heatmap="layercam")
    batch = clf.preprocess(_crops(3, 64))
    pred = clf.predict(batch, cam=True)

    net, ref = _reference(bundle, batch)
    total = np.zeros((3, 64, 64), np.float64)
    for dy, dx in STITCH_SHIFTS:
        moved = torch.from_numpy(np.ascontiguousarray(_np_shift(ref.numpy(), dy, dx)))
        total += _np_shift(_hand_layercam(net, moved).numpy(), -dy, -dx)
    expected = _minmax(torch.from_numpy(total / len(STITCH_SHIFTS))).numpy()
    assert STITCH_SHIFTS == ((0, 0), (4, 4))
    assert pred.cams is not None and pred.cams.shape == (3, 64, 64)
    np.testing.assert_allclose(pred.cams, expected, atol=GRADIENT_MAP_ATOL)
    assert float(np.median(np.abs(pred.cams - expected))) < FP32_MAP_ATOL
    with torch.no_grad():
        probs = torch.softmax(net(ref), 1)[:, 1].numpy()
    np.testing.assert_allclose(pred.probs, probs, atol=FP32_MAP_ATOL)


def test_layercam4_is_the_layer4_layercam_from_the_classifying_pass(tmp_path: Path) -> None:
    """``layercam4`` by hand: a forward hook on layer4, the fracture logit's gradient there, its
    positive part times the activation summed over channels, upsampled and normalised; no second
    pass is timed, and it differs from CAM, which also counts the negatively weighted channels."""
    bundle = load_bundle(create_untrained_bundle(tmp_path / "s8", input_size=64, feature_stride=8))
    clf = Classifier(bundle, torch.device("cpu"), "fp32")  # layercam4 is the default
    assert clf.heatmap == "layercam4"
    batch = clf.preprocess(_crops(3, 64))
    pred = clf.predict(batch, cam=True)

    net, ref = _reference(bundle, batch)
    assert isinstance(net, models.ResNet)
    acts: dict[str, torch.Tensor] = {}
    handle = net.layer4.register_forward_hook(lambda _m, _i, out: acts.__setitem__("4", out))
    logits = net(ref.clone().requires_grad_(True))
    handle.remove()
    (g4,) = torch.autograd.grad(logits[:, 1].sum(), (acts["4"],))
    with torch.no_grad():
        expected = _minmax((torch.relu(g4) * acts["4"]).sum(1)).numpy()
        probs = torch.softmax(logits, 1)[:, 1].numpy()
    assert pred.cams is not None and pred.cams.shape == (3, 64, 64)
    np.testing.assert_allclose(pred.cams, expected, atol=FP32_MAP_ATOL)
    np.testing.assert_allclose(pred.probs, probs, atol=FP32_MAP_ATOL)
    assert pred.heatmap_s == 0.0
    cam = Classifier(bundle, torch.device("cpu"), "fp32", heatmap="cam").predict(batch)
    assert cam.cams is not None and np.abs(cam.cams - pred.cams).max() > 0.05


def test_heatmaps_only_for_crops_at_or_above_cam_min_prob(resnet_classifier: Classifier) -> None:
    clf = Classifier(resnet_classifier.bundle, torch.device("cpu"), "fp32", heatmap="layercam")
    batch = clf.preprocess(_crops(4, 64))
    full = clf.predict(batch, cam=True)
    bar = float(np.sort(full.probs)[2])  # the two most likely crops get maps
    part = clf.predict(batch, cam=True, cam_min_prob=bar)
    assert full.cams is not None and part.cams is not None
    wanted = full.probs >= bar
    assert wanted.sum() == 2
    # the same crops through the same kernels; only the batch of the second pass differs
    np.testing.assert_allclose(part.cams[wanted], full.cams[wanted], atol=FP32_MAP_ATOL)
    assert not part.cams[~wanted].any()
    np.testing.assert_array_equal(part.probs, full.probs)
    none = clf.predict(batch, cam=True, cam_min_prob=2.0)
    assert none.cams is not None and not none.cams.any()


def test_unknown_heatmap_method_is_a_usage_error(resnet_classifier: Classifier) -> None:
    with pytest.raises(UsageError, match="heatmap method"):
        Classifier(resnet_classifier.bundle, torch.device("cpu"), "fp32", heatmap="scorecam")


def test_every_heatmap_method_has_one_spec_and_a_help_line() -> None:
    """A method is its enum member, its summary and its spec: nothing else to keep in step."""
    from auditor.cli.model_options import HEATMAP_METHOD_HELP
    from auditor.model.cam import RESNET_HEATMAP_SPECS
    from auditor.vocab import DEFAULT_HEATMAP, HeatmapMethod

    assert list(RESNET_HEATMAP_SPECS) == list(HeatmapMethod)
    for method, spec in RESNET_HEATMAP_SPECS.items():
        assert spec.forward == (spec.gradient_map is None), method
        assert f"{method.value} (" in HEATMAP_METHOD_HELP and method.summary in HEATMAP_METHOD_HELP
    assert f"{DEFAULT_HEATMAP.value} (the default" in HEATMAP_METHOD_HELP
    assert RESNET_HEATMAP_SPECS[HeatmapMethod.LAYERCAM4].positive_weights
    assert not RESNET_HEATMAP_SPECS[HeatmapMethod.CAM].positive_weights
