"""SegGuidedLoss: λ = 0 is the plain loss, weights are validated, a tiny problem overfits."""

from __future__ import annotations

import pytest
import torch

from segguided_model.labels import regions_from_subregions
from segguided_model.losses import LossTerms, SegGuidedLoss
from segguided_model.network import SegGuidedNet, SegGuidedOutput

torch.set_num_threads(1)


def blob_problem(size: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image whose channels show a nested tumour, with its regions and sub-regions."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(size)] * 3, indexing="ij")).float()
    distance = ((grid - size / 2) ** 2).sum(0).sqrt()
    enhancing = distance < size / 8
    core = distance < size / 5
    whole = distance < size / 3
    subregions = torch.stack([core & ~enhancing, whole & ~core, enhancing])[None].float()
    regions = regions_from_subregions(subregions, channel_dim=1).float()
    image = torch.cat([subregions, whole[None, None].float()], dim=1) + 0.1 * torch.randn(1, 4, size, size, size)
    return image, regions, subregions


def random_output(shape=(1, 3, 8, 8, 8), stages=2) -> SegGuidedOutput:
    map_logits = tuple(torch.randn(shape[0], 3, *(s // 2**i for s in shape[2:])) for i in reversed(range(stages)))
    maps = tuple(torch.sigmoid(stage) for stage in map_logits)
    return SegGuidedOutput(torch.randn(shape), maps, attention_logits=map_logits)


def test_zero_attention_weight_gives_the_plain_segmentation_loss():
    output = random_output()
    regions = (torch.rand(1, 3, 8, 8, 8) > 0.5).float()
    subregions = (torch.rand(1, 3, 8, 8, 8) > 0.5).float()
    terms = SegGuidedLoss(attention_weight=0.0)(output, regions, subregions)
    plain = SegGuidedLoss(attention_weight=0.0)(SegGuidedOutput(output.logits), regions, subregions)
    assert isinstance(terms, LossTerms)
    assert torch.equal(terms.total, terms.segmentation)
    assert torch.equal(terms.total, plain.total)
    assert terms.attention > 0


def test_total_adds_each_stage_loss_with_its_weight():
    output = random_output(stages=2)
    regions = torch.zeros(1, 3, 8, 8, 8)
    subregions = (torch.rand(1, 3, 8, 8, 8) > 0.5).float()
    loss = SegGuidedLoss(attention_weight=[0.0, 2.0])
    terms = loss(output, regions, subregions)
    last_stage = loss.attention_loss(output.attention_logits[1], subregions)
    torch.testing.assert_close(terms.total, terms.segmentation + 2.0 * last_stage)


def test_network_without_gates_has_zero_attention_term():
    output = SegGuidedOutput(torch.randn(1, 3, 8, 8, 8))
    terms = SegGuidedLoss(attention_weight=0.5)(output, torch.zeros(1, 3, 8, 8, 8), torch.zeros(1, 3, 8, 8, 8))
    assert terms.attention == 0
    assert torch.equal(terms.total, terms.segmentation)


def test_deep_supervision_logits_are_supervised_too():
    model = SegGuidedNet(base_width=4, levels=3, deep_supervision=True)
    image, regions, subregions = blob_problem(8)
    terms = SegGuidedLoss()(model(image), regions, subregions)
    terms.total.backward()
    assert model.deep_supervision_heads[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("weight", [-0.1, float("nan"), [], [0.1, -1.0]])
def test_invalid_attention_weight_raises_value_error(weight):
    with pytest.raises(ValueError, match="attention_weight"):
        SegGuidedLoss(attention_weight=weight)


def test_per_stage_weights_must_match_the_number_of_stages():
    with pytest.raises(ValueError, match="3 values but the network hands out 2"):
        SegGuidedLoss(attention_weight=[0.1, 0.1, 0.1])(random_output(stages=2), torch.zeros(1, 3, 8, 8, 8), torch.zeros(1, 3, 8, 8, 8))


def test_target_shape_mismatch_raises_value_error():
    with pytest.raises(ValueError, match="regions shape"):
        SegGuidedLoss()(random_output(), torch.zeros(1, 3, 4, 4, 4), torch.zeros(1, 3, 8, 8, 8))


def test_tiny_problem_overfits_and_attention_maps_move_toward_the_masks():
    torch.manual_seed(0)
    image, regions, subregions = blob_problem(16)
    model = SegGuidedNet(base_width=4, levels=3)
    loss = SegGuidedLoss(attention_weight=1.0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)

    def map_error() -> float:
        with torch.no_grad():
            return float((model(image).attention_maps[-1] - subregions).abs().mean())

    error_before = map_error()
    losses = []
    for _ in range(40):
        terms = loss(model(image), regions, subregions)
        optimiser.zero_grad()
        terms.total.backward()
        optimiser.step()
        losses.append(float(terms.total.detach()))
    assert losses[-1] < 0.5 * losses[0]
    assert map_error() < 0.5 * error_before
