"""The bundled classifier's domain guard on crops it must accept and crops it must reject
(issue 21). The figures on larger sets, and the commands, are in docs/models.md ("The domain
guard"); these tests hold the guard to them on small sets, with margins for the smaller samples.
"""

from __future__ import annotations

import pytest
import torch

from auditor.model.bundle import ModelBundle, load_bundle
from auditor.model.perturb import inverted, noisy
from auditor.synth import SynthConfig, write_archive
from auditor.training import guard_rates as gr
from tests.helpers.paths import REPO_DIR

SHARED = REPO_DIR.parent / "shared"
CORPUS_XRAY = SHARED / "dicom-corpus" / "xray"
DRR_DETECTIONS = SHARED / "real-anatomy" / "verse-drr" / "detection_data.json"
CPU = torch.device("cpu")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    loaded = load_bundle()
    assert loaded.card.guard is not None, "the bundled classifier has no domain guard"
    return loaded


@pytest.fixture(scope="module")
def heldout(bundle: ModelBundle, tmp_path_factory: pytest.TempPathFactory) -> gr.CropSet:
    # a synthetic world nobody trained or fitted on: seed 2108 is used nowhere else
    world = tmp_path_factory.mktemp("heldout")
    write_archive(world, 12, 2108, SynthConfig(max_side=1500, distractor_rate=0.0))
    card = bundle.card
    crops, _ = gr.world_crops(world, card.input_size, card.crop_margin, max_crops=80)
    return gr.CropSet("held-out", crops, False, "seed 2108")


def _share(bundle: ModelBundle, crop_set: gr.CropSet) -> float:
    (rate,) = gr.measure_guard(bundle, [crop_set], CPU)
    assert rate.n == len(crop_set.crops) > 0
    return rate.share


def test_the_guard_is_quiet_on_held_out_synthetic_crops(
    bundle: ModelBundle, heldout: gr.CropSet
) -> None:
    # The threshold is a held-out 0.985 quantile; two 250-crop held-out worlds gave 0.8 % and
    # 0.4 %. On about 70 crops a 1.5 % rate expects about one flag; 5 % allows three.
    assert len(heldout.crops) >= 50
    assert _share(bundle, heldout) < 0.05


def test_the_guard_fires_on_heavy_noise_and_inverted_crops(
    bundle: ModelBundle, heldout: gr.CropSet
) -> None:
    noise = gr.CropSet("noise", noisy(heldout.crops, seed=1), True, "")
    turned = gr.CropSet("inverted", inverted(heldout.crops), True, "")
    assert _share(bundle, noise) >= 0.9  # 100 % of 250 crops measured
    # 97.6 % of 250 crops measured at the 0.985 quantile (92.4 % at 0.99; docs/models.md)
    assert _share(bundle, turned) >= 0.9


@pytest.mark.skipif(not CORPUS_XRAY.is_dir(), reason=f"real DICOM corpus absent ({CORPUS_XRAY})")
def test_the_guard_fires_on_forced_boxes_on_real_radiographs(bundle: ModelBundle) -> None:
    card = bundle.card
    files = [p for p in CORPUS_XRAY.iterdir() if p.is_file()]
    crops, _, _ = gr.grid_crops(files, card.input_size, card.crop_margin)
    # 91.5 % of these same 176 crops: under the 95 % target (docs/models.md; the
    # localizer's image-level check refuses all 11 images); this holds the crop guard to what it
    # does, so that it does not get worse unnoticed
    assert _share(bundle, gr.CropSet("corpus", crops, True, "")) >= 0.85


@pytest.mark.skipif(not DRR_DETECTIONS.is_file(), reason=f"DRRs absent ({DRR_DETECTIONS})")
def test_the_guard_fires_on_most_real_vertebrae_of_lateral_drrs(bundle: ModelBundle) -> None:
    # read from ../shared only (CC BY-SA; never copied into the repository)
    card = bundle.card
    crops, _ = gr.coco_crops(DRR_DETECTIONS, card.input_size, card.crop_margin)
    assert len(crops) >= 10
    # 11 of these 13 measured (84.6 %); one crop fewer still passes
    assert _share(bundle, gr.CropSet("drr", crops, True, "")) >= 0.75
