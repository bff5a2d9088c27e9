import numpy as np
import pytest
import torch

from ppid.cli import main
from ppid.export import export_onnx, parity_check
from ppid.models import build, save_model

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'ppid-matting[onnx]')")


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "student.safetensors"
    save_model(build("indexnet", "student"), path)
    return path


def test_export_cli_parity_and_dynamic_axes(student, tmp_path, capsys):
    onnx_path = tmp_path / "student.onnx"
    assert main(["export", "--model", str(student), "--onnx", str(onnx_path)]) == 0
    out = capsys.readouterr().out
    diff = float(out.split("max |alpha difference| = ")[1].split()[0])
    assert diff <= 1e-4

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["alpha"]
    assert all(isinstance(d, str) for d in session.get_inputs()[0].shape[:1] + session.get_inputs()[0].shape[2:])
    # sizes the export never saw, one of them not a multiple of 32
    from ppid.models import load_model

    model = load_model(student)
    for shape in [(1, 3, 64, 160), (3, 3, 45, 77)]:
        image = torch.rand(shape)
        alpha = session.run(["alpha"], {"image": image.numpy()})[0]
        with torch.inference_mode():
            ref = model(image).alpha.numpy()
        assert alpha.shape == (shape[0], 1) + shape[2:]
        assert np.abs(alpha - ref).max() <= 1e-4


def test_teacher_exports_with_trimap_input(tmp_path):
    torch.manual_seed(1)
    teacher = build("indexnet", "teacher").eval()
    path = tmp_path / "teacher.onnx"
    export_onnx(teacher, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "trimap"]
    assert parity_check(teacher, path, shapes=((1, 64, 64), (2, 40, 72)))[0] <= 1e-4


def test_bad_model_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    assert main(["export", "--model", str(bad), "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert "bad.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
