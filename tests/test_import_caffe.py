"""Caffe ``.caffemodel`` import, read without Caffe or protobuf.

A test-side encoder (below, written from caffe.proto's field numbers, independent of the
importer's parser) writes a NetParameter the way Caffe serialises one: ``layer`` (100) entries
with ``name``/``type``/``blobs``, blob-less layers (Python data, ReLU, Pooling, Crop), the
at-once Scale layers' constant blobs, ``BlobShape`` dims packed and data packed float.

The weights come from a torchfcn model with random weights (its layer names are the Caffe
prototxts'); the imported, exported ONNX is compared against torchfcn's OWN forward on those
weights (needs torchfcn, see tests/import_parity.py); without torchfcn the reference is our own
fcn8s-atonce built from the same tensors (see the ``atonce_model`` fixture).
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from import_parity import (  # noqa: E402
    SIZES_ALL, SIZES_FAST, check_onnx_against, check_torch_against, load_torchfcn, randomize_, torch_fn,
    torchfcn_missing_reason,
)

from fcn_deploy.errors import FcnError  # noqa: E402
from fcn_deploy.export.cli import main as export_main  # noqa: E402
from fcn_deploy.training.checkpoint import load_checkpoint  # noqa: E402
from fcn_deploy.training.importers import ImportOptions, get_importer  # noqa: E402
from fcn_deploy.training.importers.caffe import parse_caffemodel  # noqa: E402
from fcn_deploy.training.importers.cli import main as import_main  # noqa: E402



# ------------------------------------------------------------------------------------------------
# A minimal protobuf encoder (the test's own; field numbers from BVLC caffe's caffe.proto)
# ------------------------------------------------------------------------------------------------

def varint(v: int) -> bytes:
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def field_bytes(num: int, payload: bytes) -> bytes:
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def field_varint(num: int, v: int) -> bytes:
    return varint(num << 3) + varint(v)


def blob(a: np.ndarray, legacy: bool = False, double: bool = False) -> bytes:
    a = np.asarray(a)
    if legacy:  # num/channels/height/width (1-4), 4-d padded with leading 1s
        dims = [1] * (4 - a.ndim) + list(a.shape)
        head = b"".join(field_varint(i + 1, d) for i, d in enumerate(dims))
    else:
        head = field_bytes(7, field_bytes(1, b"".join(varint(d) for d in a.shape)))
    data = field_bytes(8, a.astype("<f8").tobytes()) if double else field_bytes(5, a.astype("<f4").tobytes())
    return head + data


def layer(name: str, type_: str, blobs=(), v1_type=None) -> bytes:
    if v1_type is not None:  # V1LayerParameter: name 4, type 5 (enum), blobs 6
        return field_bytes(2, field_bytes(4, name.encode()) + field_varint(5, v1_type) + b"".join(field_bytes(6, b) for b in blobs))
    body = field_bytes(1, name.encode()) + field_bytes(2, type_.encode()) + b"".join(field_bytes(7, b) for b in blobs)
    return field_bytes(100, body)


def caffemodel_from_torchfcn(state, atonce: bool, name: str = "voc-fcn8s-atonce") -> bytes:
    """A NetParameter in the prototxt's layer order, from a torchfcn-layout state_dict."""
    order = ["conv1_1", "conv1_2", "pool1", "conv2_1", "conv2_2", "pool2", "conv3_1", "conv3_2", "conv3_3", "pool3",
             "conv4_1", "conv4_2", "conv4_3", "pool4", "conv5_1", "conv5_2", "conv5_3", "pool5", "fc6", "fc7",
             "score_fr", "upscore2", "scale_pool4", "score_pool4", "score_pool4c", "fuse_pool4", "upscore_pool4",
             "scale_pool3", "score_pool3", "score_pool3c", "fuse_pool3", "upscore8", "score"]
    out = bytearray(field_bytes(1, name.encode()) + layer("data", "Python"))  # += in place: no 500 MB copy a layer
    for n in order:
        if n.startswith("scale_pool"):
            if atonce:
                c = 512 if n == "scale_pool4" else 256
                out += layer(n, "Scale", [blob(np.full(c, 0.01 if n == "scale_pool4" else 0.0001, np.float32))])
            continue
        if f"{n}.weight" in state:
            w = state[f"{n}.weight"].numpy()
            blobs = [blob(w)]
            if f"{n}.bias" in state:
                blobs.append(blob(state[f"{n}.bias"].numpy()))
            out += layer(n, "Deconvolution" if n.startswith("upscore") else "Convolution", blobs)
            if n.startswith("conv") or n.startswith("fc"):
                out += layer("relu" + n[4:] if n.startswith("conv") else "relu" + n[2:], "ReLU")
        elif n.startswith("pool"):
            out += layer(n, "Pooling")
        elif n.endswith("c") or n == "score":
            out += layer(n, "Crop")
        else:
            out += layer(n, "Eltwise")
    out += layer("loss", "SoftmaxWithLoss")
    return bytes(out)


@pytest.fixture(scope="module")
def atonce_model(tmp_path_factory):
    """(reference model, its torchfcn-layout state_dict, .caffemodel path). The reference is
    torchfcn's FCN8sAtOnce with random weights where torchfcn is installed, else our own
    fcn8s-atonce/vgg16 built from the same tensors (then the ONNX check covers the parser, the
    name mapping and the export, not torchfcn's graph; test_import_torchfcn covers that)."""
    d = tmp_path_factory.mktemp("caffe")
    if torchfcn_missing_reason() is None:
        m = randomize_(load_torchfcn().FCN8sAtOnce(n_class=21), seed=5).eval()
        state = m.state_dict()
    else:  # the same layout from our own fcn8s-atonce's tensors, renamed back; it is the reference then
        from fcn_deploy.training.importers.torchfcn import VGG_CONV_INDEX
        from fcn_deploy.training.registry import build_model

        m = randomize_(build_model("fcn8s-atonce", "vgg16", 21), seed=5).eval()
        ours = m.state_dict()
        back = {f"backbone.features.{i}": n for n, i in VGG_CONV_INDEX.items()}
        back.update({"backbone.fc6": "fc6", "backbone.fc7": "fc7"})
        state = {back.get(k.rsplit(".", 1)[0], k.rsplit(".", 1)[0]) + "." + k.rsplit(".", 1)[1]: v for k, v in ours.items()}
    path = d / "fcn8s-atonce-pascal.caffemodel"
    path.write_bytes(caffemodel_from_torchfcn(state, atonce=True))
    return m, state, path


@pytest.fixture(scope="module")
def converted(atonce_model):
    """The caffe importer's result for the caffemodel, in memory (fcn-import's own path from
    file to checkpoint is run by the CLI tests below on small nets, by test_import_torchfcn on a
    full VGG16, and by the slow ONNX test here: a 538 MB checkpoint write and read cost seconds)."""
    _, _, path = atonce_model
    return get_importer("caffe").convert(path.read_bytes(), ImportOptions(source_path=str(path)))


def test_caffemodel_matches_torchfcn_forward(atonce_model, converted):
    """The imported model in PyTorch against the reference's forward at 97x131, batch 1 and 2
    (the ONNX leg: test_caffemodel_onnx_matches_torchfcn_forward, slow)."""
    from fcn_deploy.training.registry import build_model

    m, _, _ = atonce_model
    imp = converted
    assert (imp.arch, imp.backbone, imp.num_classes) == ("fcn8s-atonce", "vgg16", 21)
    assert imp.info_defaults["channel_order"] == "BGR"
    assert any("Scale" in n for n in imp.notes)
    model = build_model(imp.arch, imp.backbone, imp.num_classes, **imp.build_options)
    model.load_state_dict(imp.state_dict, strict=True)
    print(check_torch_against(model.eval(), torch_fn(m), SIZES_FAST))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_caffemodel_onnx_matches_torchfcn_forward(atonce_model, tmp_path, capsys):
    """Slow: fcn-import to a 538 MB checkpoint, a VGG16 export (~20 s on 2 cores) and three
    sizes; the default run checks the import in PyTorch and the VGG16 export on its own
    (test_export_onnx)."""
    m, _, path = atonce_model
    ck, onnx_path = tmp_path / "m.pt", tmp_path / "m.onnx"
    assert import_main([str(path), str(ck)]) == 0
    assert "--from caffe" in capsys.readouterr().out
    c = load_checkpoint(ck)
    assert c["info"]["channel_order"] == "BGR" and c["import"]["source_format"] == "caffe"
    assert export_main([str(ck), str(onnx_path), "--no-verify"]) == 0
    print(check_onnx_against(onnx_path, torch_fn(m), SIZES_ALL))


def test_parsed_tensors_equal_encoded(atonce_model, converted):
    _, state, _ = atonce_model
    imp = converted
    assert imp.arch == "fcn8s-atonce" and imp.num_classes == 21
    assert torch.equal(imp.state_dict["backbone.features.0.weight"], state["conv1_1.weight"])
    assert torch.equal(imp.state_dict["backbone.features.28.bias"], state["conv5_3.bias"])
    assert torch.equal(imp.state_dict["backbone.fc6.weight"], state["fc6.weight"])
    assert torch.equal(imp.state_dict["upscore8.weight"], state["upscore8.weight"])
    assert not any("scale" in k for k in imp.state_dict)


def test_truncated_caffemodel_one_line(atonce_model, tmp_path, capsys):
    _, _, path = atonce_model
    cut = tmp_path / "cut.caffemodel"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "x.pt"
    assert import_main([str(cut), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated or damaged caffemodel" in err[0]
    assert import_main([str(cut), str(out), "--from", "caffe"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated or damaged caffemodel" in err[0]
    assert not out.exists()


def _tiny(names, type_="Convolution"):
    return field_bytes(1, b"net") + b"".join(layer(n, type_, [blob(np.ones((2, 2, 1, 1), np.float32)), blob(np.ones(2))]) for n in names)


@pytest.mark.parametrize("names,word", [
    (["conv1_1", "score_fr_sem", "upscore2_sem", "score_fr_geo", "upscore2_geo"], "SIFT Flow"),
    (["conv1_1color", "score_frcolor", "conv1_1hha", "score_frhha", "score_fused"], "NYUD late-fusion"),
    (["conv1_1_bgrd", "conv1_2"], "4-channel"),
])
def test_two_head_models_refused(names, word, tmp_path, capsys):
    src = tmp_path / "two.caffemodel"
    src.write_bytes(_tiny(names))
    out = tmp_path / "x.pt"
    assert import_main([str(src), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and word in err[0] and "single-head" in err[0]
    assert not out.exists()


def test_not_a_vgg_fcn_names_what_it_found(tmp_path, capsys):
    src = tmp_path / "alex.caffemodel"
    src.write_bytes(_tiny(["conv1", "conv2", "fc6"]))
    assert import_main([str(src), str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a VGG16 FCN caffemodel" in err[0] and "conv1" in err[0]


def test_wrong_atonce_scale_refused():
    net = field_bytes(1, b"net") + layer("scale_pool4", "Scale", [blob(np.full(512, 0.02, np.float32))])
    with pytest.raises(FcnError, match="not the at-once constant 0.01"):
        get_importer("caffe").convert(net, ImportOptions())
    ok = field_bytes(1, b"net") + layer("scale_pool4", "Scale", [blob(np.full(512, 0.01, np.float32))])
    with pytest.raises(FcnError, match="not a VGG16 FCN caffemodel"):  # passes the scale check, then no trunk
        get_importer("caffe").convert(ok, ImportOptions())


def test_legacy_dims_v1_layers_and_double_data():
    w = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3) - 20
    b = np.array([0.5, -1.5], np.float32)
    net = field_bytes(1, b"old") + layer("conv1_1", "", [blob(w, legacy=True), blob(b, legacy=True)], v1_type=4)
    net += layer("upscore", "Deconvolution", [blob(w[:, :2], double=True)])
    name, layers = parse_caffemodel(net)
    assert name == "old" and [l.name for l in layers] == ["conv1_1", "upscore"]
    assert layers[0].type == "Convolution" and np.array_equal(layers[0].blobs[0], w)
    assert layers[0].blobs[1].shape == (1, 1, 1, 2) and np.array_equal(layers[0].blobs[1].ravel(), b)
    assert np.array_equal(layers[1].blobs[0], w[:, :2])
    # a blob whose shape and data disagree is a damaged file, one line
    bad = field_bytes(100, field_bytes(1, b"x") + field_bytes(7, field_bytes(7, field_bytes(1, varint(5))) + field_bytes(5, b"\0" * 8)))
    with pytest.raises(FcnError, match="damaged caffemodel"):
        parse_caffemodel(bad)
