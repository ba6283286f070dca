"""`sparsehead analyze` end to end on tiny digits runs: JSON, figures, and a valid self-contained HTML
report (checked by a strict parser, and rendered by headless Chromium when one is installed)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import TINY, run_cli

from sparsehead.cli import main

CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and Path(p).is_file()), None)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny digits runs: SimCLR + MLP head with SparseHead, and a few steps of an identity head."""
    from sparsehead import config
    from sparsehead.training.loop import pretrain

    root = tmp_path_factory.mktemp("runs")
    sparse = root / "sparse"
    pretrain(config.load(None, TINY + ["sparsity.lam=1e-2", "train.max_steps=8"]), sparse)
    identity = root / "identity"
    pretrain(config.load(None, TINY + ["head.kind=identity", "train.max_steps=2"]), identity)
    return sparse, identity


@pytest.fixture(scope="module")
def analyzed(runs):
    res = run_cli("analyze", str(runs[0]))  # the installed command, in a fresh process
    assert res.returncode == 0, res.stderr
    assert f"report: {runs[0] / 'analysis' / 'report.html'}" in res.stdout
    return runs[0] / "analysis"


def cli(capsys, *args: str) -> tuple[int, str]:
    """The CLI in this process (torch is loaded once): exit code and stderr."""
    code = main(list(args))
    return code, capsys.readouterr().err


class StrictHTML(HTMLParser):
    """Checks nesting (every non-void element closed in order) and collects tags and attributes."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "area", "base", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.tags, self.doctype = [], [], [], None
        self.captions, self._in_caption = [], False

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag == "figcaption":
            self._in_caption, self.captions = True, self.captions + [""]

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()
        if tag == "figcaption":
            self._in_caption = False

    def handle_data(self, data):
        if self._in_caption:
            self.captions[-1] += data


def parse(path: Path) -> StrictHTML:
    parser = StrictHTML()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def test_analyze_run_writes_metrics_for_r_and_z(analyzed, runs):
    data = json.loads((analyzed / "analysis.json").read_text())
    for key, dim in (("r", 64), ("z", 32)):  # width-8 ResNet-18: r is 64-d; TINY head.out_dim=32
        d = data[key]
        assert d["dim"] == dim and d["samples"] == 360  # the digits test split
        assert len(d["spectra"]["raw"]) == dim and len(d["spectra"]["normalized"]) == dim
        for metric in (
            "collapsed_dims",
            "effective_rank",
            "rankme",
            "alpha_req",
            "min_max_ratio",
            "uniformity",
            "alignment",
            "centre_divergence",
            "delta_mu",
            "nearest_centre_accuracy",
        ):
            assert metric in d, metric
        assert 1 <= d["effective_rank"] <= dim and 0 <= d["alignment"] <= 4 and -4 <= d["uniformity"] <= 0
    (head,) = data["head"]
    assert head["shape"] == [32, 64] and len(head["column_norms"]) == 64 and data["step"] == 8
    for name in ("spectra.png", "head_columns.png", "training_curves.png"):
        assert (analyzed / name).read_bytes()[:8] == PNG_MAGIC


def test_report_is_valid_self_contained_and_names_every_figure(analyzed):
    html = parse(analyzed / "report.html")
    assert html.doctype and html.doctype.lower() == "doctype html"
    assert not html.errors and not html.stack, (html.errors, html.stack)
    for tag, attrs in html.tags:
        for attr in ("src", "href"):
            value = attrs.get(attr) or ""
            assert not re.match(r"\s*(https?:)?//", value), f"external URL in <{tag} {attr}>"
    assert not re.search(r"https?://", (analyzed / "report.html").read_text())  # no URL anywhere, CSS included
    assert not any(t == "script" for t, _ in html.tags) and not any(t == "link" for t, _ in html.tags)
    images = [attrs for tag, attrs in html.tags if tag == "img"]
    pngs = sorted(p.name for p in analyzed.glob("*.png"))
    assert len(images) == len(pngs) == 3
    for img in images:
        assert img["src"].startswith("data:image/png;base64,") and img.get("alt")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == PNG_MAGIC
    for name in pngs:
        assert any(name in caption for caption in html.captions), f"no caption names {name}"


def test_training_curves_show_the_effective_rank_of_r_and_z_beside_the_loss(analyzed, runs):
    from sparsehead.analysis.plots import curve_panels
    from sparsehead.runs.metrics_log import read_metrics

    panels = curve_panels(read_metrics(runs[0]))  # what the collapse monitor logged while training
    assert panels[:2] == [
        ("SSL loss", ["loss"]),
        ("effective rank while training", ["r/effective_rank", "z/effective_rank"]),
    ]
    caption = next(c for c in parse(analyzed / "report.html").captions if "training_curves.png" in c)
    assert "effective rank of r and z" in caption


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium browser installed (/usr/bin/chromium); install the Debian package chromium to run this test",
)
def test_report_renders_in_headless_chromium(analyzed, tmp_path):
    # A copy of the report with a probe that records, once loaded, whether every image decoded.
    probe = (
        "<script>addEventListener('load',()=>{const i=[...document.images];"
        "document.body.dataset.images=i.length;"
        "document.body.dataset.decoded=i.filter(x=>x.complete&&x.naturalWidth>0).length;});</script>"
    )
    page = tmp_path / "probe.html"
    page.write_text((analyzed / "report.html").read_text().replace("</body>", probe + "</body>"))
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
    ]
    dom = subprocess.run(cmd + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert 'data-images="3"' in dom and 'data-decoded="3"' in dom, dom[:300]
    assert "Scalar metrics" in dom and "effective rank of r and z" in dom  # the training curves' caption
    shot = tmp_path / "shot.png"
    subprocess.run(
        cmd + ["--window-size=1200,900", f"--screenshot={shot}", (analyzed / "report.html").as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.read_bytes()[:8] == PNG_MAGIC and shot.stat().st_size > 10_000  # a page, not a blank frame


def test_analyze_checkpoint_with_out_and_data_override(runs, tmp_path, capsys):
    ckpt = sorted((runs[0] / "checkpoints").glob("ckpt-*.pt"))[-1]
    assert cli(capsys, "analyze", str(ckpt), "--out", str(tmp_path / "a"), "--data", "image_size=16")[0] == 0
    assert (tmp_path / "a" / "report.html").is_file()
    code, err = cli(capsys, "analyze", str(ckpt), "--out", str(tmp_path / "b"), "--data", "source=nope")
    assert code == 2 and "data.source" in err
    assert not (tmp_path / "b").exists()  # nothing half-written


def test_analyze_compare_overlays_runs(runs, tmp_path, capsys):
    assert cli(capsys, "analyze", "--compare", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "cmp"))[0] == 0
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert len(data["runs"]) == 2
    identity = next(v for k, v in data["runs"].items() if "identity" in k)
    assert identity["r"]["spectra"]["raw"] == identity["z"]["spectra"]["raw"]  # no head: z = r
    assert identity["head_support"] == []
    html = parse(tmp_path / "cmp" / "report.html")
    assert not html.errors and any("spectra_compare.png" in c for c in html.captions)
    assert cli(capsys, "analyze", "--compare", str(runs[0]), str(runs[1])) == (
        2,
        "error: --compare needs --out FOLDER for the comparison report\n",
    )


def test_analyze_features_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((300, 6)) @ rng.standard_normal((6, 20))).astype(np.float32)  # rank 6 of 20
    np.save(tmp_path / "emb.npy", x)
    np.save(tmp_path / "labels.npy", np.arange(300) % 3)
    assert (
        cli(capsys, "analyze", "--features", str(tmp_path / "emb.npy"), "--labels", str(tmp_path / "labels.npy"))[0]
        == 0
    )
    out = tmp_path / "emb-analysis"
    data = json.loads((out / "analysis.json").read_text())
    assert data["x"]["collapsed_dims"] == 14 and "nearest_centre_accuracy" in data["x"]
    assert (out / "spectra.png").is_file() and not parse(out / "report.html").errors


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give one run folder"),
        (["--features", "missing.npy"], "does not exist"),
        (["--labels", "x.npy", "somewhere"], "--labels goes with --features"),
        (["no/such/run"], "neither a checkpoint file nor a run folder"),
    ],
)
def test_analyze_bad_input_gives_clear_errors(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = cli(capsys, "analyze", *args)
    assert code == 2 and err.startswith("error: ") and message in err


def test_analyze_features_rejects_wrong_shapes(tmp_path, capsys):
    np.save(tmp_path / "flat.npy", np.zeros(10))
    code, err = cli(capsys, "analyze", "--features", str(tmp_path / "flat.npy"))
    assert code == 2 and "(samples, dims) matrix" in err
    np.save(tmp_path / "emb.npy", np.zeros((10, 3)))
    np.save(tmp_path / "labels.npy", np.zeros(9, dtype=int))
    code, err = cli(
        capsys, "analyze", "--features", str(tmp_path / "emb.npy"), "--labels", str(tmp_path / "labels.npy")
    )
    assert code == 2 and "10 integer labels" in err
