"""The experiment scripts' own logic that a reported number rests on (experiments/bn_stats.py)."""

import torch

from helpers import ROOT, load_script
from ppid.models import build

BN_STATS = ROOT / "experiments" / "bn_stats.py"


def test_recalibrated_statistics_average_the_batches_and_come_back_after():
    bn_stats = load_script(BN_STATS)
    torch.manual_seed(0)
    model = build("indexnet", "student").eval()
    first = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    inputs = []
    first.register_forward_hook(lambda module, args, out: inputs.append(args[0].detach().clone()))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [(torch.rand(2, 3, 64, 64) * scale, None) for scale in (1.0, 3.0)]
    with bn_stats.recalibrated_statistics(model, batches):
        assert not model.training
        seen = torch.cat(inputs)  # what the first BatchNorm saw: both batches, weighed alike
        assert torch.allclose(first.running_mean, seen.mean(dim=(0, 2, 3)), atol=1e-5)
        assert not torch.equal(first.running_mean, before[next(k for k in before if k.endswith("running_mean"))])
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # the model's own statistics are back
