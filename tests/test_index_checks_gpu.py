"""Out-of-range ids and targets on a GPU: an IndexError naming the argument and the value,
raised before any kernel runs, and the device still works afterwards (no device-side assert)."""
import numpy as np
import pytest

import unet
from unet import functional as F, nn

pytestmark = pytest.mark.gpu


def test_bad_ids_and_targets_raise_and_the_device_goes_on():
    emb = nn.Embedding(5, 3).to("cuda")
    with pytest.raises(IndexError, match=r"^ids: .*7"):
        emb(unet.tensor([0, 7, 1]).to("cuda"))
    logits = unet.randn(3, 5).to("cuda")
    with pytest.raises(IndexError, match=r"^target: .*9"):
        F.cross_entropy(logits, unet.tensor([0, 9, 4]).to("cuda"))
    # the next operations run and give right answers
    out = emb(unet.tensor([0, 4, 1]).to("cuda"))
    np.testing.assert_array_equal(out.numpy(), emb.weight.numpy()[[0, 4, 1]])
    loss = F.cross_entropy(logits, unet.tensor([0, 2, 4]).to("cuda"))
    expected = F.cross_entropy(logits.to("cpu"), unet.tensor([0, 2, 4]))
    np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-6)
