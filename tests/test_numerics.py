"""The shared numerics and the one PNG writer, against their definitions."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from mechscope._numerics import pad, pearson, ranks, spearman
from mechscope._png import data_uri, encode_png


def test_pad_fills_either_side():
    rows = [[1, 2, 3], [4]]
    assert pad(rows, 0).tolist() == [[1, 2, 3], [4, 0, 0]]
    assert pad(rows, 9, "left").tolist() == [[1, 2, 3], [9, 9, 4]]
    with pytest.raises(ValueError, match="padding_side"):
        pad(rows, 0, "middle")


def test_ranks_average_ties_and_keep_the_batch_shape():
    x = torch.tensor([[[3.0, 1.0, 3.0, 2.0]], [[0.0, 0.0, 0.0, 1.0]]])
    assert ranks(x).tolist() == [[[2.5, 0.0, 2.5, 1.0]], [[1.0, 1.0, 1.0, 3.0]]]


def test_pearson_and_spearman_match_their_definitions():
    gen = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(3, 50, generator=gen, dtype=torch.float64),
        torch.randn(3, 50, generator=gen, dtype=torch.float64),
    )
    for i in range(3):
        xc, yc = x[i] - x[i].mean(), y[i] - y[i].mean()
        expected = float((xc * yc).sum() / math.sqrt(float((xc**2).sum() * (yc**2).sum())))
        assert float(pearson(x, y)[i]) == pytest.approx(expected, abs=1e-12)
    assert float(spearman(x[0], x[0] ** 3)) == pytest.approx(1.0)  # monotone: ranks agree
    assert float(spearman(x[0], -x[0])) == pytest.approx(-1.0)
    assert math.isnan(float(pearson(torch.ones(5), x[0, :5])))  # a constant side has no correlation


@pytest.mark.parametrize("shape", [(7, 5), (7, 5, 3)])
def test_png_decodes_to_the_same_pixels(shape):
    pixels = (np.random.default_rng(0).random(shape) * 255).astype(np.uint8)
    png = encode_png(pixels)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), pixels)
    assert data_uri(png).startswith("data:image/png;base64,iVBORw0KGgo")
    with pytest.raises(ValueError):
        data_uri(b"GIF89a")
    with pytest.raises(ValueError, match="uint8"):
        encode_png(pixels.astype(np.float32))
