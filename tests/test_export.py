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


def test_int8_export_is_quantised_and_close(student, tmp_path, capsys, monkeypatch):
    import onnx

    import ppid.export as export

    monkeypatch.setattr(export, "CALIBRATION_COUNT", 2)  # calibration cost, not its quality, is what a test can afford
    monkeypatch.setattr(export, "CALIBRATION_SIZE", 64)
    path = tmp_path / "student_int8.onnx"
    assert main(["export", "--model", str(student), "--onnx", str(path), "--int8"]) == 0
    out = capsys.readouterr().out
    assert "int8" in out and "tolerance on the mean" in out
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert path.stat().st_size < 0.35 * student.stat().st_size  # int8 weights, not float32

    from ppid.models import load_model

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = torch.rand(1, 3, 70, 90, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = load_model(student)(image).alpha.numpy()
    got = session.run(["alpha"], {"image": image.numpy()})[0]
    assert got.shape == ref.shape and np.abs(got - ref).mean() <= export.INT8_MEAN_TOLERANCE


def test_fp16_and_int8_exclude_each_other(student, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--model", str(student), "--onnx", str(tmp_path / "x.onnx"), "--fp16", "--int8"])
    assert exit_info.value.code == 2 and "not allowed with" in capsys.readouterr().err
