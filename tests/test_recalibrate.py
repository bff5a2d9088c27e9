"""`ppid recalibrate`: BatchNorm statistics recomputed on whole training composites."""

import pytest
import torch
from PIL import Image

from ppid import PpidError
from ppid.cli import main
from ppid.data.synth import synthesize
from ppid.models import build, load_model, save_model
from ppid.recalibrate import recalibrate_batchnorm, whole_composites


def test_whole_composites_batch_by_size_with_test_trimaps_and_covered_backgrounds(tmp_path):
    synthesize(tmp_path / "train", 5, seed=0, size=(48, 64), workers=1)
    batches = whole_composites(tmp_path / "train", 5, batch_size=2)
    assert [tuple(image.shape) for image, _ in batches] == [(2, 3, 48, 64), (2, 3, 48, 64), (1, 3, 48, 64)]
    trimap = batches[0][1]
    assert trimap.shape == (2, 1, 48, 64)  # 0 / 128 / 255 over 255, as evaluation feeds teachers
    assert torch.isin(trimap.unique(), torch.tensor([0.0, 128 / 255, 1.0])).all()
    with pytest.raises(PpidError, match="6 images asked for; it has 5 foregrounds"):
        whole_composites(tmp_path / "train", 6)

    bg = sorted((tmp_path / "train" / "bg").iterdir())[0]  # a background smaller than its foreground
    Image.open(bg).resize((32, 24)).save(bg)
    fg = sorted((tmp_path / "train" / "fg").iterdir())[1]  # and a foreground of another size
    alpha = sorted((tmp_path / "train" / "alpha").iterdir())[1]
    for path in (fg, alpha):
        Image.open(path).resize((40, 30)).save(path)
    shapes = sorted(tuple(image.shape) for image, _ in whole_composites(tmp_path / "train", 5, batch_size=8))
    assert shapes == [(1, 3, 30, 40), (4, 3, 48, 64)]

    (tmp_path / "train" / "bg").rename(tmp_path / "coco")  # backgrounds kept apart
    assert len(whole_composites(tmp_path / "train", 5, bg_dir=tmp_path / "coco")) == 2


def test_recalibration_averages_the_batches_and_skips_a_pooled_branch_fed_one_image():
    torch.manual_seed(0)
    model = build("indexnet", "student").eval()
    first = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    inputs = []
    first.register_forward_hook(lambda module, args, out: inputs.append(args[0].detach().clone()))
    batches = [(torch.rand(2, 3, 64, 64) * scale, None) for scale in (1.0, 3.0)] + [(torch.rand(1, 3, 64, 64), None)]
    layers = recalibrate_batchnorm(model, batches)  # IndexNet's ASPP pools to 1x1: one image gives one value
    assert layers == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert not model.training and all(not m.training for m in model.modules())
    seen = torch.cat(inputs)
    means = torch.stack([inputs[0].mean(dim=(0, 2, 3)), inputs[1].mean(dim=(0, 2, 3)), inputs[2].mean(dim=(0, 2, 3))])
    assert torch.allclose(first.running_mean, means.mean(0), atol=1e-5)  # every batch weighs the same
    assert seen.shape[0] == 5 and int(first.num_batches_tracked) == 3
    pooled = dict(model.named_modules())["aspp.image_pool.1"]  # after a 1x1 pooling: skipped the single image
    assert int(pooled.num_batches_tracked) == 2

    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    state = torch.get_rng_state()
    recalibrate_batchnorm(model, batches)  # again: dropout draws the same, the caller's random state is kept
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stats.items())
    assert torch.equal(torch.get_rng_state(), state)


def test_recalibrate_command_writes_a_model_and_reports_validation(tmp_path, capsys):
    from ppid.data.testset import build_testset

    synthesize(tmp_path / "train", 4, seed=0, size=(64, 64), workers=1)
    synthesize(tmp_path / "val_src", 2, seed=1, size=(64, 64), workers=1)
    src = tmp_path / "val_src"
    build_testset(src / "fg", src / "alpha", src / "bg", 1, tmp_path / "val", split=src / "split.txt")
    torch.manual_seed(0)
    model = build("indexnet", "student").eval()
    save_model(model, tmp_path / "m.safetensors")
    out = tmp_path / "m_bn.safetensors"
    args = ["recalibrate", "--model", str(tmp_path / "m.safetensors"), "--data", str(tmp_path / "train"),
            "--images", "4", "--batch-size", "2", "--device", "cpu"]
    assert main(args + ["--out", str(out), "--val", str(tmp_path / "val")]) == 0
    text = capsys.readouterr().out
    assert "on 4 whole training composites" in text and "validation whole-image SAD" in text
    new = load_model(out)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(new.state_dict()[k], v)]
    assert changed and all(k.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked") for k in changed)

    assert main(args + ["--out", str(tmp_path / "m.safetensors")]) == 2
    assert "would overwrite the model" in capsys.readouterr().err
    assert main(args[:-6] + ["--images", "9", "--device", "cpu", "--out", str(out)]) == 2
    assert "9 images asked for" in capsys.readouterr().err
