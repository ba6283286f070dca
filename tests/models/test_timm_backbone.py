"""timm backbones (model.backbone=timm:<name>): a tiny ViT trains on digits (the loss falls), resumes
bitwise after SIGKILL, runs k-NN, analyze and export, and its SparseHead penalty acts on its head;
the config checks (patch size, missing timm, the model.timm_args mapping) run before any work."""

from __future__ import annotations

import builtins
import json
import signal

import pytest
import torch

from conftest import TINY, TINY_VIT, assert_loss_fell, fixed_view_losses, run_cli
from sparsehead import cli, config
from sparsehead.export.formats import export_backbone, loading_snippet
from sparsehead.models.backbones import BackboneInfo, backbone_info, build_backbone
from sparsehead.runs import checkpoint
from sparsehead.runs.model import build_model
from sparsehead.sparsity import SparseHeadRegularizer
from sparsehead.training.loop import pretrain

timm = pytest.importorskip("timm", reason="timm is in the test extra: pip install -e '.[test]'")

# 256 digits, batch 64: 4 steps per epoch, 6 epochs; a checkpoint every 2 steps.
RUN = (
    TINY
    + TINY_VIT
    + [
        "data.subset=256",
        "train.epochs=6",
        "train.threads=1",
        "train.checkpoint_every=2",
        "train.keep_checkpoints=2",
        "optim.name=adamw",
        "optim.lr=5e-3",
        "optim.weight_decay=0.05",
        "sparsity.lam=1e-3",
    ]
)


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("vit")
    cfg = config.load(None, RUN + [f"train.out_dir={out}"])
    torch.manual_seed(cfg.train.seed)
    initial = build_model(cfg).state_dict()
    summary = pretrain(cfg, out / "run")
    torch.set_num_threads(threads)
    return cfg, out / "run", initial, summary


def test_timm_args_from_yaml_and_dotted_overrides_merge(tmp_path):
    path = tmp_path / "vit.yaml"
    path.write_text(
        "model:\n  backbone: timm:vit_tiny_patch16_224\n  timm_args: {patch_size: 4, depth: 1, "
        "embed_dim: 16, num_heads: 4}\n"
    )
    cfg = config.load(path, ["data.image_size=16", "model.timm_args.num_heads=2"])
    assert cfg.model.timm_args == {"patch_size": 4, "depth": 1, "embed_dim": 16, "num_heads": 2}
    info = backbone_info(cfg.model, 16)
    assert info.feature_dim == 16 and not info.channels_last  # a ViT: no NHWC
    backbone = build_backbone(cfg.model, 16)
    assert backbone.timm_create_kwargs["img_size"] == 16  # from data.image_size
    assert backbone(torch.randn(2, 3, 16, 16)).shape == (2, 16)
    with pytest.raises(config.ConfigError, match="train.epochs"):
        config.load(None, ["train.epochs.x=1"])  # only a mapping option takes a third part
    with pytest.raises(config.ConfigError, match="model.timm_args: expected a mapping"):
        config.load(None, ["model.backbone=timm:vit_tiny_patch16_224", "model.timm_args=4"])


def test_patch_size_must_divide_the_image_size_before_any_work(tmp_path):
    with pytest.raises(config.ConfigError, match=r"patch_size: the patch \(5, 5\).*data.image_size=16"):
        config.load(None, TINY + TINY_VIT + ["model.timm_args.patch_size=5", f"train.out_dir={tmp_path}"])
    assert not any(tmp_path.iterdir())  # nothing was written


def test_backbone_errors_name_the_fix(monkeypatch):
    with pytest.raises(config.ConfigError, match="choose one of resnet18, resnet34, resnet50 or timm:<name>"):
        config.load(None, ["model.backbone=vgg"])
    with pytest.raises(config.ConfigError, match="timm has no model 'no_such_net'"):
        config.load(None, ["model.backbone=timm:no_such_net"])
    with pytest.raises(config.ConfigError, match="global_pool"):  # unpooled tokens are not one r
        config.load(None, TINY + TINY_VIT + ["model.timm_args.global_pool=''"])
    with pytest.raises(config.ConfigError, match="only read by a timm"):
        config.load(None, ["model.timm_args.depth=2"])
    real_import = builtins.__import__

    def no_timm(name, *args, **kwargs):
        if name == "timm":
            raise ImportError("No module named 'timm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    with pytest.raises(config.ConfigError, match=r"pip install 'sparsehead\[timm\]'"):
        config.load(None, TINY + TINY_VIT + ["model.timm_args.depth=2"])  # a new key: not cached


def test_a_cnn_from_timm_gets_no_img_size_and_keeps_channels_last():
    cfg = config.load(None, TINY + ["model.backbone=timm:resnet18"])
    assert backbone_info(cfg.model, 16) == BackboneInfo(feature_dim=512, channels_last=True)
    assert "img_size" not in build_backbone(cfg.model, 16).timm_create_kwargs


@pytest.mark.numerics
def test_vit_loss_falls_on_fixed_views(vit_run):
    cfg, run_dir, initial, _ = vit_run
    final = checkpoint.load(checkpoint.find(run_dir))["model"]
    # 24 AdamW steps at lr 5e-3 move a 1-block ViT's SimCLR loss on the same views by well over 2%.
    assert_loss_fell(
        fixed_view_losses(cfg, initial, batches=4),
        fixed_view_losses(cfg, final, batches=4),
        "tiny ViT, SimCLR",
        min_fall=0.02,
    )


def test_vit_knn_analyze_and_sparsehead(vit_run, tmp_path):
    cfg, run_dir, initial, summary = vit_run
    knn = {k: v for k, v in summary.items() if k.startswith("knn")}
    assert knn and all(0.0 <= v <= 1.0 for v in knn.values() if isinstance(v, float)), summary
    assert cli.main(["analyze", str(run_dir), "--out", str(tmp_path / "analysis")]) == 0
    assert any((tmp_path / "analysis").iterdir())
    # SparseHead acts on the ViT's head: the penalty is lambda * L2,1 of its last layer, and its
    # gradient is lambda * W[:, j] / ||W[:, j]|| column by column (derived by hand).
    method = build_model(cfg)
    method.load_state_dict(checkpoint.load(checkpoint.find(run_dir))["model"])
    reg = SparseHeadRegularizer(cfg.sparsity, method.sparse_head(), 24)
    (layer,) = reg.layers
    assert layer is method.projector[-1]
    pen = reg.penalty()
    w = layer.weight.detach().double()
    torch.testing.assert_close(pen.double(), 1e-3 * w.norm(dim=0).sum(), rtol=1e-5, atol=0)
    pen.backward()
    torch.testing.assert_close(layer.weight.grad.double(), 1e-3 * w / w.norm(dim=0), rtol=1e-4, atol=1e-9)


def test_vit_export_loads_in_bare_timm(vit_run, tmp_path):
    cfg, run_dir, _, _ = vit_run
    out = tmp_path / "vit.safetensors"
    meta = export_backbone(run_dir, out)
    assert meta["format"] == "timm-state-dict" and meta["feature_dim"] == 32
    assert json.loads(out.with_suffix(".json").read_text()) == meta
    snippet = loading_snippet(meta, out)
    assert "sparsehead" not in snippet
    namespace: dict = {}
    exec(snippet, namespace)
    ours = build_model(cfg)
    ours.load_state_dict(checkpoint.load(checkpoint.find(run_dir))["model"])
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(namespace["model"](x), ours.backbone.eval()(x), rtol=0, atol=0)


@pytest.mark.numerics
def test_sigkilled_vit_run_resumes_bitwise(vit_run, tmp_path):
    _, reference, _, _ = vit_run
    run_dir = tmp_path / "run"
    proc = run_cli(
        "pretrain",
        *RUN,
        f"train.out_dir={tmp_path}",
        "--run-dir",
        str(run_dir),
        env={"SPARSEHEAD_TEST_SIGKILL": "step:13", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    proc = run_cli("pretrain", "--resume", str(run_dir), env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and "resuming" in proc.stderr, proc.stderr[-2000:]
    ours, theirs = (checkpoint.load(checkpoint.find(d)) for d in (run_dir, reference))
    assert ours["step"] == theirs["step"] == 24
    for part in ("model", "optimizer"):
        a, b = ours[part], theirs[part]
        flat_a = {k: v for k, v in (a.items() if part == "model" else a["state"].items())}
        flat_b = {k: v for k, v in (b.items() if part == "model" else b["state"].items())}
        assert flat_a.keys() == flat_b.keys()
        for k in flat_a:
            va, vb = flat_a[k], flat_b[k]
            if isinstance(va, dict):
                assert all(torch.equal(va[n], vb[n]) for n in va), (part, k)
            else:
                assert torch.equal(va, vb), (part, k)


@pytest.mark.parametrize("name", ["cifar10_vit_tiny", "imagenet100_vit_small"])
def test_vit_configs_are_valid(name):
    import yaml

    from conftest import REPO

    values = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
    if values["data"]["source"] not in typing_args_of_source():
        pytest.skip(f"data.source={values['data']['source']} arrives with the streaming reader (issue #14)")
    cfg = config.from_dict(values, check_paths=False)
    assert cfg.optim.name == "adamw" and cfg.model.backbone.startswith("timm:vit_")
    assert not backbone_info(cfg.model, cfg.data.image_size).channels_last


def typing_args_of_source():
    import typing

    return typing.get_args(typing.get_type_hints(config.DataConfig)["source"])


def test_lars_on_a_vit_warns_and_adamw_does_not(recwarn):
    from sparsehead.training.optim import build_optimizer

    cfg = config.load(None, TINY + TINY_VIT + ["optim.name=lars"])
    method = build_model(cfg)
    with pytest.warns(UserWarning, match="LARS is known to make ViT training unstable"):
        build_optimizer(cfg.optim, method)
    build_optimizer(config.load(None, TINY + TINY_VIT + ["optim.name=adamw"]).optim, method)
    assert not [w for w in recwarn if "LARS" in str(w.message)]
