"""Shape contracts of Conv5FC3."""
import pytest
import torch

from bids_qc.networks import CHANNELS, Conv5FC3, PadMaxPool3d, pooled_shape


@pytest.mark.parametrize("shape,pooled", [((64, 80, 64), (2, 3, 2)), ((96, 112, 96), (3, 4, 3)),
                                          ((17, 9, 33), (1, 1, 2))])
def test_pooled_shape(shape, pooled):
    assert pooled_shape(shape) == pooled


def test_padmaxpool_pads_odd_dimensions():
    x = torch.arange(27.0).reshape(1, 1, 3, 3, 3)
    y = PadMaxPool3d()(x)
    assert y.shape == (1, 1, 2, 2, 2)
    assert y.max() == 26  # the last voxel survives (padding, not cropping)


def test_conv5fc3_output_and_parameter_count():
    net = Conv5FC3((64, 80, 64))
    out = net(torch.rand(2, 1, 64, 80, 64))
    assert out.shape == (2, 2)
    n_conv = sum(p.numel() for p in net.features.parameters())
    n_flat = CHANNELS[-1] * 2 * 3 * 2
    n_fc = (n_flat * 1300 + 1300) + (1300 * 50 + 50) + (50 * 2 + 2)
    assert sum(p.numel() for p in net.classifier.parameters()) == n_fc
    assert n_conv == sum(27 * ci * co + co + 2 * co for ci, co in zip((1,) + CHANNELS[:-1], CHANNELS))
    assert len(net.fc_layers()) == 3
    assert net.fc_layers()[-1].out_features == 2


def test_conv5fc3_odd_input():
    assert Conv5FC3((33, 41, 29))(torch.rand(1, 1, 33, 41, 29)).shape == (1, 2)
