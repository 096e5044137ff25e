"""Training patches and evaluation volumes: shapes, determinism, tumour sampling, a compact cache."""

from __future__ import annotations

import pytest
import torch

from segguided_model.data.discovery import discover_cases
from segguided_model.data.layouts import CaseRecord
from segguided_model.data.pipeline import build_eval_dataset, build_train_loader
from segguided_model.data.preprocessing import load_case
from segguided_model.data.synthetic import generate_federation

PATCH = (16, 16, 16)


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> list[CaseRecord]:
    federation = generate_federation(tmp_path_factory.mktemp("fed"), sites=1, cases=4, val_cases=0, size=(32, 32, 24), seed=0)
    return discover_cases(federation.site_dirs[0]).cases


def _epoch(loader) -> list[dict]:
    return [batch for batch in loader]


def test_batches_hold_patches_of_image_regions_and_subregions(cases):
    batch = next(iter(build_train_loader(cases, PATCH, batch_size=2, seed=0, samples_per_case=2)))
    assert batch["image"].shape == (4, 4, *PATCH) and batch["image"].dtype == torch.float32
    assert batch["regions"].shape == (4, 3, *PATCH) and batch["subregions"].shape == (4, 3, *PATCH)
    assert len(batch["case_id"]) == 4
    regions = batch["regions"].bool()
    assert not (regions[:, 0] & ~regions[:, 1]).any() and not (regions[:, 1] & ~regions[:, 2]).any()


def test_same_seed_gives_the_same_batches_and_another_seed_does_not(cases):
    first = _epoch(build_train_loader(cases, PATCH, batch_size=2, seed=7))
    again = _epoch(build_train_loader(cases, PATCH, batch_size=2, seed=7))
    other = _epoch(build_train_loader(cases, PATCH, batch_size=2, seed=8))
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(first, again))
    assert not all(torch.equal(a["image"], b["image"]) for a, b in zip(first, other))


def test_patches_sample_tumour_often(cases):
    loader = build_train_loader(cases, PATCH, batch_size=4, seed=1, samples_per_case=6)
    with_tumour = [bool(patch[2].any()) for batch in _epoch(loader) for patch in batch["regions"]]
    assert sum(with_tumour) / len(with_tumour) >= 0.6


def test_cache_holds_compact_tensors_and_gives_the_same_batches(cases, tmp_path):
    plain = _epoch(build_train_loader(cases, PATCH, batch_size=2, seed=3))
    cached = _epoch(build_train_loader(cases, PATCH, batch_size=2, seed=3, cache_dir=tmp_path))
    reread = _epoch(build_train_loader(cases, PATCH, batch_size=2, seed=3, cache_dir=tmp_path))
    assert all(torch.equal(a["image"], b["image"]) and torch.equal(a["image"], c["image"])
               for a, b, c in zip(plain, cached, reread))
    files = list(tmp_path.rglob("*.pt"))
    assert len(files) == len(cases)
    for path in files:
        item = torch.load(path, weights_only=False)
        for key in ("image", "regions", "subregions"):
            tensor = item[key]
            assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()


def test_eval_dataset_gives_volumes_cropped_to_brain_and_tumour_without_losing_either(cases):
    whole = load_case(cases[0])
    item = build_eval_dataset(cases[:1])[0]
    shape = tuple(item["image"].shape[1:])
    assert item["image"].shape[0] == 4 and all(c <= w for c, w in zip(shape, (32, 32, 24))) and shape != (32, 32, 24)
    assert item["regions"].shape == item["subregions"].shape == (3, *shape) and item["regions"].dtype == torch.uint8
    # Nothing of the brain or the tumour is cut off: the crop holds every non-zero voxel.
    assert int(item["regions"].sum()) == int(whole["regions"].sum())
    assert torch.count_nonzero(item["image"]) == torch.count_nonzero(whole["image"])
    assert item["case_id"] == cases[0].case_id


def test_eval_cache_preprocesses_once_and_again_when_a_file_changes(cases, tmp_path, monkeypatch):
    first = list(build_eval_dataset(cases[:2], cache_dir=tmp_path))[0]
    files = sorted(tmp_path.rglob("*.pt"))
    assert len(files) == 2
    assert len(list(build_eval_dataset(cases[:2], cache_dir=tmp_path))) == 2 and sorted(tmp_path.rglob("*.pt")) == files

    import segguided_model.data.preprocessing as preprocessing

    def unreadable(*args, **kwargs):
        raise AssertionError("a cached case was read from its NIfTI files again")

    monkeypatch.setattr(preprocessing, "read_volume", unreadable)
    monkeypatch.setattr(preprocessing, "read_label_map", unreadable)
    again = build_eval_dataset(cases[:1], cache_dir=tmp_path)[0]  # from the cache, no file read
    assert torch.equal(again["image"], first["image"])
    monkeypatch.undo()

    flair = cases[0].image_paths["flair"]
    flair.touch()  # a new modification time: the case is preprocessed again
    build_eval_dataset(cases[:1], cache_dir=tmp_path)[0]
    assert len(list(tmp_path.rglob("*.pt"))) == 3


def test_unlabelled_cases_and_bad_sizes_are_rejected(cases):
    unlabelled = CaseRecord("BraTS-GLI-99999-000", cases[0].image_paths, None, "brats2023", "brats2023")
    with pytest.raises(ValueError, match="BraTS-GLI-99999-000"):
        build_train_loader([unlabelled], PATCH, batch_size=1, seed=0)
    with pytest.raises(ValueError, match="BraTS-GLI-99999-000"):
        build_eval_dataset([unlabelled])
    with pytest.raises(ValueError, match=r"\(16, 16\)"):
        build_train_loader(cases, (16, 16), batch_size=1, seed=0)
    with pytest.raises(ValueError, match="no cases"):
        build_train_loader([], PATCH, batch_size=1, seed=0)
