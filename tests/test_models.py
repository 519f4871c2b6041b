from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
import torchvision
from torch import nn

from geoseg.errors import BandMismatchError, CheckpointError, InputError
from geoseg.models import (
    MODELS,
    FCNResNet,
    SegNet,
    SmpSegmenter,
    build_model,
    count_parameters,
    list_models,
    load_init_weights,
    model_spec,
    summarize_models,
)

BANDS5 = ("red", "green", "blue", "nir", "ndsm")

# Every family, small: fcn on resnet18, each smp architecture on resnet18, segnet.
SMALL = [
    ("fcn_resnet18", {}),
    ("unet", {"encoder": "resnet18"}),
    ("deeplabv3plus", {"encoder": "resnet18"}),
    ("pspnet", {"encoder": "resnet18"}),
    ("fpn", {"encoder": "resnet18"}),
    ("segnet", {"base_width": 16}),
]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- registry -------------------------------------------------------------------------------


def test_registry_names_and_info() -> None:
    expected = {
        "fcn_resnet18",
        "fcn_resnet34",
        "fcn_resnet50",
        "fcn_resnet101",
        "unet",
        "deeplabv3plus",
        "pspnet",
        "fpn",
        "segnet",
    }
    assert set(MODELS) == expected
    infos = list_models()
    assert [i.name for i in infos] == list(MODELS)
    for info in infos:
        assert info.family in {"fcn", "smp", "segnet"}
        assert info.description
    assert MODELS["unet"].defaults == {"encoder": "resnet34"}
    assert MODELS["segnet"].defaults == {"base_width": 32}
    assert dict(MODELS["fcn_resnet50"].defaults) == {}


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(InputError, match="unknown model 'resnet'") as exc:
        build_model("resnet", in_channels=5, num_classes=6)
    for name in MODELS:
        assert name in str(exc.value)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("unet", {"encoder": "resnet9000"}, "unknown encoder 'resnet9000'"),
        ("unet", {"base_width": 8}, "has no argument 'base_width'; its arguments are: encoder"),
        ("fcn_resnet18", {"encoder": "resnet18"}, "has no argument 'encoder'"),
        ("segnet", {"base_width": 0}, "base_width=0"),
        ("segnet", {"base_width": True}, "base_width=True"),
    ],
)
def test_bad_arch_args(name: str, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InputError, match=match):
        build_model(name, in_channels=5, num_classes=6, **kwargs)


@pytest.mark.parametrize(("in_channels", "num_classes"), [(0, 6), (5, 0), (5, 2.5)])
def test_bad_sizes(in_channels: int, num_classes: int) -> None:
    with pytest.raises(InputError, match="must be an integer >= 1"):
        model_spec("segnet", in_channels=in_channels, num_classes=num_classes)


def test_model_spec_round_trips_through_json() -> None:
    spec = model_spec("unet", in_channels=4, num_classes=3, encoder="resnet18")
    assert spec == {
        "name": "unet",
        "args": {"in_channels": 4, "num_classes": 3, "encoder": "resnet18"},
    }
    spec = json.loads(json.dumps(spec))
    a = build_model(spec["name"], **spec["args"])
    b = build_model("unet", in_channels=4, num_classes=3, encoder="resnet18")
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(sa[k].shape == sb[k].shape for k in sa)
    # defaults are filled in, so the spec stays valid if a default changes later
    assert model_spec("segnet", in_channels=5, num_classes=6)["args"]["base_width"] == 32


def test_encoder_argument_changes_the_encoder() -> None:
    r18 = build_model("fpn", in_channels=5, num_classes=6, encoder="resnet18")
    r34 = build_model("fpn", in_channels=5, num_classes=6)
    assert isinstance(r18, SmpSegmenter)
    # resnet34 has 2 more blocks in layer1..4 than resnet18 (3,4,6,3 vs 2,2,2,2)
    assert len(r34.net.encoder.layer3) == 6
    assert len(r18.net.encoder.layer3) == 2
    assert r18.net.encoder.conv1.in_channels == 5


# --- forward / backward ---------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kwargs"), SMALL, ids=[n for n, _ in SMALL])
@pytest.mark.parametrize("shape", [(1, 5, 64, 64), (1, 5, 70, 45)], ids=["64x64", "70x45"])
def test_forward_backward_any_size(
    name: str, kwargs: dict[str, object], shape: tuple[int, int, int, int]
) -> None:
    model = build_model(name, in_channels=5, num_classes=6, **kwargs)
    model.train()
    x = torch.randn(*shape, requires_grad=True)
    y = model(x)
    assert y.shape == (shape[0], 6, shape[2], shape[3])
    assert torch.isfinite(y).all()
    target = torch.randint(0, 6, (shape[0], shape[2], shape[3]))
    F.cross_entropy(y, target).backward()
    # every parameter takes part (no dead layers), and the gradient reaches every input pixel
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []
    assert x.grad is not None and (x.grad.abs().sum(dim=1) > 0).float().mean() > 0.9


def test_fcn_resnet50_forward() -> None:
    model = build_model("fcn_resnet50", in_channels=5, num_classes=6).eval()
    assert isinstance(model, FCNResNet)
    assert [model.score8.in_channels, model.score16.in_channels, model.score32.in_channels] == [
        512,
        1024,
        2048,
    ]
    with torch.no_grad():
        y = model(torch.randn(1, 5, 64, 64))
    assert y.shape == (1, 6, 64, 64)


def test_small_inputs_below_32_pixels_work() -> None:
    model = build_model("segnet", in_channels=5, num_classes=6, base_width=8).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 5, 20, 37)).shape == (2, 6, 20, 37)


@pytest.mark.parametrize("name", ["fcn_resnet18", "segnet"])
def test_padding_is_reflection_at_bottom_right(name: str) -> None:
    """A 70x45 input is processed as its bottom/right reflection to 96x64, then cropped."""
    model = build_model(name, in_channels=5, num_classes=6).eval()
    x = torch.randn(1, 5, 70, 45)
    padded = F.pad(x, (0, 64 - 45, 0, 96 - 70), mode="reflect")
    with torch.no_grad():
        y = model(x)
        ref = model(padded)
    torch.testing.assert_close(y, ref[..., :70, :45])


# --- FCN structure --------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(64, 64), (70, 45)])
def test_fcn_is_sum_of_upsampled_score_heads(hw: tuple[int, int]) -> None:
    model = build_model("fcn_resnet18", in_channels=5, num_classes=6).eval()
    assert isinstance(model, FCNResNet)
    heads = {"score8": model.score8, "score16": model.score16, "score32": model.score32}
    for conv, cin in zip(heads.values(), (128, 256, 512), strict=True):
        assert isinstance(conv, nn.Conv2d)
        assert conv.kernel_size == (1, 1) and conv.in_channels == cin and conv.out_channels == 6
    captured: dict[str, torch.Tensor] = {}
    handles = [
        m.register_forward_hook(lambda _m, _i, out, n=n: captured.__setitem__(n, out))
        for n, m in heads.items()
    ]
    h, w = hw
    x = torch.randn(2, 5, h, w)
    with torch.no_grad():
        y = model(x)
    for handle in handles:
        handle.remove()
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32  # padded to a multiple of 32
    for name, stride in (("score8", 8), ("score16", 16), ("score32", 32)):
        assert captured[name].shape == (2, 6, ph // stride, pw // stride)
    manual = sum(
        F.interpolate(t, size=(ph, pw), mode="bilinear", align_corners=False)
        for t in captured.values()
    )
    assert isinstance(manual, torch.Tensor)
    torch.testing.assert_close(y, manual[..., :h, :w])


def test_fcn_first_conv_takes_any_band_count() -> None:
    for bands in (1, 7):
        model = build_model("fcn_resnet18", in_channels=bands, num_classes=2)
        assert isinstance(model, FCNResNet)
        assert model.backbone.conv1.weight.shape == (64, bands, 7, 7)
        assert not hasattr(model.backbone, "fc")


# --- SegNet ---------------------------------------------------------------------------------


def test_segnet_uses_pooling_indices_and_base_width() -> None:
    small = build_model("segnet", in_channels=5, num_classes=6, base_width=8)
    big = build_model("segnet", in_channels=5, num_classes=6, base_width=16)
    assert isinstance(small, SegNet)
    assert isinstance(small.pool, nn.MaxPool2d) and small.pool.return_indices
    assert isinstance(small.unpool, nn.MaxUnpool2d)
    assert len(small.encoder) == len(small.decoder) == 5
    widths = [stage[0].out_channels for stage in small.encoder]
    assert widths == [8, 16, 32, 64, 64]
    # conv weights scale with width^2, so doubling the width roughly quadruples the size
    assert 3.5 < count_parameters(big) / count_parameters(small) < 4.1


def test_segnet_unpools_at_the_max_positions() -> None:
    """Max-unpooling puts each value back where the max was, zeros elsewhere."""
    model = build_model("segnet", in_channels=1, num_classes=2, base_width=4)
    assert isinstance(model, SegNet)
    x = torch.tensor([[[[1.0, 5.0], [2.0, 0.0]]]])
    pooled, idx = model.pool(x)
    back = model.unpool(pooled, idx, output_size=x.shape[-2:])
    assert back.tolist() == [[[[0.0, 5.0], [0.0, 0.0]]]]


# --- counting / summary ---------------------------------------------------------------------


def test_count_parameters() -> None:
    model = nn.Sequential(nn.Conv2d(5, 6, 3), nn.BatchNorm2d(6))
    assert count_parameters(model) == 5 * 6 * 9 + 6 + 6 + 6
    model[1].requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 5 * 6 * 9 + 6
    assert count_parameters(model) == 5 * 6 * 9 + 6 + 6 + 6


def test_summarize_models_counts_what_build_model_builds() -> None:
    rows = summarize_models(in_channels=5, num_classes=6, names=["fcn_resnet18", "segnet"])
    assert [r.name for r in rows] == ["fcn_resnet18", "segnet"]
    for r in rows:
        assert r.parameters == count_parameters(build_model(r.name, in_channels=5, num_classes=6))
    assert rows[1].defaults == {"base_width": 32}
    with pytest.raises(InputError, match="unknown model"):
        summarize_models(names=["nope"])


# --- pretrained initialisation --------------------------------------------------------------


@pytest.fixture(scope="module")
def r18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.fixture
def r18_file(tmp_path: Path, r18_state: dict[str, torch.Tensor]) -> Path:
    p = tmp_path / "resnet18.pth"
    torch.save(r18_state, p)
    return p


def test_load_init_weights_into_fcn(r18_file: Path, r18_state: dict[str, torch.Tensor]) -> None:
    model = build_model("fcn_resnet18", in_channels=5, num_classes=6)
    assert isinstance(model, FCNResNet)
    report = load_init_weights(model, r18_file, band_names=BANDS5)
    bb = model.backbone.state_dict()
    for key in ("layer1.0.conv1.weight", "layer4.1.bn2.running_var", "bn1.weight"):
        torch.testing.assert_close(bb[key], r18_state[key])
    src = r18_state["conv1.weight"]
    w = bb["conv1.weight"]
    torch.testing.assert_close(w[:, 0], src[:, 0] * 3 / 5)
    torch.testing.assert_close(w[:, 1], src[:, 1] * 3 / 5)
    torch.testing.assert_close(w[:, 2], src[:, 2] * 3 / 5)
    mean_rgb = (src[:, 0] + src[:, 1] + src[:, 2]) / 3
    torch.testing.assert_close(w[:, 3], mean_rgb * 3 / 5)
    torch.testing.assert_close(w[:, 4], mean_rgb * 3 / 5)
    assert report.backbone == "backbone"
    assert "conv1.weight" in report.loaded and "layer4.1.conv2.weight" in report.loaded
    assert len(report.loaded) == len(bb)
    assert report.missing == ()
    assert report.unused == ("fc.bias", "fc.weight")
    assert report.first_conv_scale == pytest.approx(0.6)
    assert dict(report.band_sources) == {
        "red": "red",
        "green": "green",
        "blue": "blue",
        "nir": "mean(red,green,blue)",
        "ndsm": "mean(red,green,blue)",
    }
    # the score heads are not part of the backbone and keep their initialisation
    assert model.score8.weight.shape == (6, 128, 1, 1)


def test_load_init_weights_maps_bands_by_name(
    r18_file: Path, r18_state: dict[str, torch.Tensor]
) -> None:
    model = build_model("fcn_resnet18", in_channels=4, num_classes=6)
    load_init_weights(model, r18_file, band_names=("NIR", "Blue", "green", "red"))
    src = r18_state["conv1.weight"]
    w = model.state_dict()["backbone.conv1.weight"]
    torch.testing.assert_close(w[:, 1], src[:, 2] * 3 / 4)
    torch.testing.assert_close(w[:, 2], src[:, 1] * 3 / 4)
    torch.testing.assert_close(w[:, 3], src[:, 0] * 3 / 4)
    torch.testing.assert_close(w[:, 0], src.mean(dim=1) * 3 / 4)


def test_load_init_weights_rgb_model_is_exact(
    r18_file: Path, r18_state: dict[str, torch.Tensor]
) -> None:
    model = build_model("fcn_resnet18", in_channels=3, num_classes=6)
    report = load_init_weights(model, r18_file, band_names=("red", "green", "blue"))
    assert report.first_conv_scale == 1.0
    torch.testing.assert_close(
        model.state_dict()["backbone.conv1.weight"], r18_state["conv1.weight"]
    )


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": {f"backbone.{k}": v for k, v in sd.items()}},
        lambda sd: {"model": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3},
        lambda sd: {f"module.encoder.{k}": v for k, v in sd.items()},
    ],
    ids=["state_dict+backbone", "model+model", "module.encoder"],
)
def test_load_init_weights_wrappers_and_prefixes(
    tmp_path: Path, r18_state: dict[str, torch.Tensor], wrap: object
) -> None:
    assert callable(wrap)
    p = tmp_path / "wrapped.pt"
    torch.save(wrap(r18_state), p)
    model = build_model("unet", in_channels=5, num_classes=6, encoder="resnet18")
    report = load_init_weights(model, p, band_names=BANDS5)
    assert report.backbone == "net.encoder"
    assert report.missing == ()
    enc = model.state_dict()
    torch.testing.assert_close(
        enc["net.encoder.layer2.0.downsample.0.weight"], r18_state["layer2.0.downsample.0.weight"]
    )


def test_load_init_weights_into_pspnet_skips_removed_layers(r18_file: Path) -> None:
    model = build_model("pspnet", in_channels=5, num_classes=6, encoder="resnet18")
    report = load_init_weights(model, r18_file, band_names=BANDS5)
    assert "layer4.0.conv1.weight" in report.unused
    assert "layer2.0.conv1.weight" in report.loaded


def test_load_init_weights_depth_mismatch(tmp_path: Path) -> None:
    p = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), p)
    model = build_model("fcn_resnet18", in_channels=5, num_classes=6)
    before = model.state_dict()["backbone.layer1.0.conv1.weight"].clone()
    with pytest.raises(CheckpointError, match=r"resnet50.pth: .*do not fit.*ResNet depth"):
        load_init_weights(model, p, band_names=BANDS5)
    # nothing was changed by the failed load
    torch.testing.assert_close(model.state_dict()["backbone.layer1.0.conv1.weight"], before)


def test_load_init_weights_errors(tmp_path: Path, r18_file: Path) -> None:
    model = build_model("fcn_resnet18", in_channels=5, num_classes=6)
    with pytest.raises(InputError, match="no such weights file") as exc:
        load_init_weights(model, tmp_path / "missing.pth", band_names=BANDS5)
    assert not isinstance(exc.value, CheckpointError)
    with pytest.raises(BandMismatchError, match="4 band names"):
        load_init_weights(model, r18_file, band_names=BANDS5[:4])
    with pytest.raises(BandMismatchError, match="repeat"):
        load_init_weights(model, r18_file, band_names=("red", "red", "blue", "nir", "ndsm"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a torch file")
    with pytest.raises(CheckpointError, match=r"junk\.pth: not a readable torch state dict"):
        load_init_weights(model, junk, band_names=BANDS5)
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="none of its 1 keys"):
        load_init_weights(model, other, band_names=BANDS5)
    segnet = build_model("segnet", in_channels=5, num_classes=6, base_width=4)
    with pytest.raises(InputError, match="SegNet has no ResNet backbone"):
        load_init_weights(segnet, r18_file, band_names=BANDS5)


def test_load_init_weights_partial_needs_strict_false(
    tmp_path: Path, r18_state: dict[str, torch.Tensor]
) -> None:
    partial = {k: v for k, v in r18_state.items() if not k.startswith("layer4")}
    p = tmp_path / "partial.pth"
    torch.save(partial, p)
    model = build_model("fcn_resnet18", in_channels=5, num_classes=6)
    with pytest.raises(CheckpointError, match=r"missing .*strict=False"):
        load_init_weights(model, p, band_names=BANDS5)
    report = load_init_weights(model, p, band_names=BANDS5, strict=False)
    assert report.missing and all(k.startswith("layer4") for k in report.missing)
    torch.testing.assert_close(
        model.state_dict()["backbone.layer3.1.conv2.weight"], r18_state["layer3.1.conv2.weight"]
    )


def test_load_init_weights_multispectral_source(tmp_path: Path) -> None:
    sd = torchvision.models.resnet18(weights=None).state_dict()
    sd["conv1.weight"] = torch.randn(64, 4, 7, 7)
    p = tmp_path / "rgbn.pth"
    torch.save(sd, p)
    model = build_model("fcn_resnet18", in_channels=2, num_classes=6)
    with pytest.raises(CheckpointError, match="takes 4 bands but source_bands names 3"):
        load_init_weights(model, p, band_names=("nir", "ndsm"))
    report = load_init_weights(
        model, p, band_names=("nir", "ndsm"), source_bands=("red", "green", "blue", "nir")
    )
    w = model.state_dict()["backbone.conv1.weight"]
    torch.testing.assert_close(w[:, 0], sd["conv1.weight"][:, 3] * 2.0)
    assert report.first_conv_scale == 2.0


def test_load_init_weights_truncated_and_non_dict_files(tmp_path: Path, r18_file: Path) -> None:
    model = build_model("fcn_resnet18", in_channels=5, num_classes=6)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(r18_file.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"truncated\.pth: not a readable torch state dict"):
        load_init_weights(model, truncated, band_names=BANDS5)
    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(CheckpointError, match="holds a Tensor, not a state dict"):
        load_init_weights(model, tensor_only, band_names=BANDS5)
