"""`sparsehead export`: write a run's backbone for use outside sparsehead."""

from __future__ import annotations

from pathlib import Path

from sparsehead.cli.common import command


def add(sub):
    from sparsehead.export.formats import FORMATS

    p = command(
        sub,
        "export",
        "write a run's backbone as a plain torchvision state_dict, or for detection transfer",
        "Write the backbone of a run (its newest checkpoint) or of a checkpoint file as a torchvision ResNet "
        "state_dict without fc (--format torchvision), as the trunk of torchvision's Faster/Mask R-CNN FPN "
        "backbone (torchvision-detection) or as detectron2's ResNet pickle (detectron2), plus a .json sidecar "
        "(arch, width, stem, feature_dim, normalisation), and print the code or command that uses it. "
        "Detection formats need a width-64 ResNet with the ImageNet stem (docs/transfer.md).",
        "  sparsehead export runs/my-run --out backbone.safetensors\n"
        "  sparsehead export runs/r50 --format detectron2 --out r50.pkl\n"
        "  sparsehead export runs/r50 --format torchvision-detection --out r50-fpn-body.pt",
    )
    p.add_argument("source", metavar="RUN_FOLDER_OR_CHECKPOINT")
    p.add_argument(
        "--out", required=True, help="output file: .pt or .safetensors (torchvision formats), or .pkl (detectron2)"
    )
    p.add_argument("--format", default="torchvision", choices=list(FORMATS), help="default: torchvision")
    p.set_defaults(run=run)


def run(args) -> int:
    from sparsehead.export.formats import detection_snippet, export_backbone, loading_snippet

    meta = export_backbone(args.source, args.out, args.format)
    shape = f"width {meta['width']}, {meta['stem']} stem, " if "width" in meta else ""
    print(
        f"wrote {args.out} ({args.format}: {meta['arch']}, {shape}"
        f"{meta['feature_dim']}-d features, step {meta['step']}) and its sidecar "
        f"{Path(args.out).with_suffix('.json')}"
    )
    if args.format == "torchvision":
        print("load it without sparsehead:\n")
        print(loading_snippet(meta, args.out))
    else:
        print("use it for detection:\n")
        print(detection_snippet(meta, args.out))
    return 0
