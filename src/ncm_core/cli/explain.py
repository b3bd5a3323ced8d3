"""``ncm explain``: heatmaps over mosaics and maps for folders of tiles."""

from __future__ import annotations

import argparse

import json
from pathlib import Path

from ncm_core.cli._args import common, hw, positive, progress, targets
from ncm_core.errors import NcmError


def cmd_explain(a: argparse.Namespace) -> None:
    from ncm_core.explain.methods import check_method

    methods = [check_method(m) for m in a.method.split(",")]
    src = Path(a.input)
    tiles_mode = src.is_dir() and not (src / "zarr.json").exists() and not (src / ".zgroup").exists()
    if tiles_mode:
        return _explain_tiles(a, methods)
    if len(methods) != 1:
        raise NcmError("a mosaic is explained with one method at a time (--method)")
    from ncm_core.viz.figures import heatmap_overlay_figure
    from ncm_core.explain.heatmaps import explain_mosaic

    h = explain_mosaic(a.bundle, a.input, a.out, methods[0], targets(a.target), a.layer, overlap=a.overlap,
                       factor=a.factor, batch_size=a.batch_size, window=a.window, stride=a.occlusion_stride,
                       device=a.device, overwrite=a.overwrite, resume=not a.restart,
                       progress=progress("explain", a.quiet))
    out = Path(a.out)
    pngs = []
    for k, name in enumerate(h.names):
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        pngs.append(heatmap_overlay_figure(a.input, h, out.parent / f"{out.name.split('.')[0]}-{safe}.png", k))
    print(f"heatmap: {h.path}  {h.method}{' at ' + h.attrs['layer'] if h.attrs.get('layer') else ''}, "
          f"{len(h.names)} map(s) ({', '.join(h.names[:6])}{', ...' if len(h.names) > 6 else ''}), "
          f"1 value per {h.factor} px, {h.attrs['n_tiles']} tiles, {h.attrs['seconds']:.1f} s")
    print(f"overlays: {', '.join(str(p) for p in pngs[:3])}{', ...' if len(pngs) > 3 else ''}")


def _explain_tiles(a: argparse.Namespace, methods: list[str]) -> None:
    """Explain every image in a folder (tiles or section crops); maps as TIFF, overlays as PNG."""
    import csv

    import numpy as np
    import tifffile

    from ncm_core.models.bundle import load_bundle
    from ncm_core.explain.methods import Explanation, explain
    from ncm_core.viz.figures import explanation_figure
    from ncm_core.io.mosaic import open_mosaic
    from ncm_core.devices import resolve_device

    exts = {".png", ".tif", ".tiff", ".jpg", ".jpeg"}
    files = sorted(p for p in Path(a.input).rglob("*") if p.suffix.lower() in exts and p.is_file())
    if not files:
        raise NcmError("no images (PNG, TIFF, JPEG) in the folder", a.input)
    out = Path(a.out)
    if out.exists() and not a.overwrite:
        raise NcmError("output exists; choose another or pass --overwrite", out)
    bundle = load_bundle(a.bundle)
    bundle.model.to(resolve_device(a.device))
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        import shutil

        shutil.rmtree(partial)
    (partial / "maps").mkdir(parents=True)
    images = []
    for f in files:
        try:
            images.append(np.asarray(open_mosaic(f).data.compute()))
        except NcmError:
            raise
        except Exception as exc:
            raise NcmError(f"cannot read image ({type(exc).__name__}: {exc})", f) from None
    rows, kept = [], {}
    n_keep = max(6, a.check_images if a.check else 0)  # tiles whose maps the overview and checks reuse
    prog = progress("explain", a.quiet)
    for i, (f, img) in enumerate(zip(files, images)):
        stem = str(f.relative_to(a.input).with_suffix("")).replace("/", "__")
        for m in methods:
            e = explain(bundle, img[None], m, targets(a.target), a.layer, batch_size=a.batch_size,
                        window=a.window, stride=a.occlusion_stride, device=a.device)
            tifffile.imwrite(partial / "maps" / f"{stem}__{m}.tif", e.maps[0],
                             metadata={"axes": "CYX", "Labels": e.names[0]})
            for k, name in enumerate(e.names[0]):
                score = e.scores[0, e.targets[0, k]]
                rows.append({"image": str(f), "method": m, "layer": e.layer or "", "map": k, "target": name,
                             "score": f"{score:.6g}", "min": f"{e.maps[0, k].min():.6g}",
                             "max": f"{e.maps[0, k].max():.6g}"})
            if i < n_keep:
                kept.setdefault(m, []).append(e)
        if prog:
            prog(i + 1, len(files), "images")
    with open(partial / "explanations.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    same = len({im.shape for im in images[:n_keep]}) == 1
    kept = {m: Explanation.concat(es) for m, es in kept.items()} if same else {}
    if same:
        explanation_figure(np.stack(images[:6]), {m: e[:6] for m, e in kept.items()}, partial / "overview.png")
    if a.check:
        _explain_checks(a, bundle, images, kept, partial)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    partial.rename(out)
    print(f"explanations: {out}  {len(files)} image(s) x {len(methods)} method(s); maps/*.tif, explanations.csv"
          + (", overview.png" if same else "") + (", checks.json" if a.check else ""))


def _explain_checks(a: argparse.Namespace, bundle: object, images: list, maps: dict, out: Path) -> None:
    """Sanity checks on the first ``--check-images`` tiles, reusing their maps (``maps``: method -> Explanation)."""
    import numpy as np

    from ncm_core.viz.figures import deletion_insertion_figure, randomisation_figure
    from ncm_core.explain.sanity import attribution_in_mask, deletion_insertion, particle_boundaries, randomisation_check

    if not maps:
        raise NcmError("--check needs images of one size", a.input)
    imgs = np.stack(images[: a.check_images])
    kw = dict(batch_size=a.batch_size, window=a.window, stride=a.occlusion_stride)
    report = {"images": len(imgs), "randomisation": randomisation_check(bundle, imgs, list(maps),
                                                                        targets(a.target), layer=a.layer, **kw)}
    masks = np.stack([particle_boundaries(im) for im in imgs])
    report["boundaries"], curves = {}, {}
    for m, e in maps.items():
        e = e[: len(imgs)]
        report["boundaries"][m] = attribution_in_mask(e.maps, masks[:, None])
        curves[m] = deletion_insertion(bundle, imgs, e)
        report.setdefault("faithfulness", {})[m] = {k: curves[m][k] for k in (
            "deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc")}
    (out / "checks.json").write_text(json.dumps(report, indent=2))
    randomisation_figure(report["randomisation"], out / "randomisation.png")
    deletion_insertion_figure(curves, out / "deletion_insertion.png")
    for m, r in report["randomisation"].items():
        b = report["boundaries"][m]
        print(f"{m}: randomisation rank correlation {r['spearman_abs']:.2f} ({'passes' if r['passes'] else 'FAILS'}); "
              f"{b['positive_share_in_mask']:.0%} of positive attribution on particle boundaries "
              f"({b['area_share']:.0%} of the area, x{b['enrichment']:.2f}); deletion AUC "
              f"{report['faithfulness'][m]['deletion_auc']:.3f} (random "
              f"{report['faithfulness'][m]['random_deletion_auc']:.3f})")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the ``ncm`` parser."""
    x = sub.add_parser("explain", help="explanation maps: a heatmap over a mosaic (zarr) or maps for a folder of tiles")
    x.add_argument("bundle", help="model bundle folder")
    x.add_argument("input", help="a mosaic (zarr, OME-Zarr, TIFF, ...) or a folder of tiles / section crops")
    x.add_argument("out", help="output: a zarr group for a mosaic (e.g. gradcam.zarr), a folder for tiles")
    x.add_argument("--method", default="gradcam", help="gradcam, gradcam++, scorecam, layercam, gradram, "
                   "guided-backprop, guided-gradcam, occlusion (tiles: several, comma-separated)")
    x.add_argument("--target", help="predicted (default for classifiers), top-K, all (default for regression), a "
                   "class or target name or index, class:NAME, output:K; comma-separated for several")
    x.add_argument("--layer", help="target layer for CAM methods (default: the last layer with a spatial output)")
    x.add_argument("--overlap", type=int, help="mosaic: pixels shared by neighbouring tiles (default: tile/4)")
    x.add_argument("--factor", type=positive, help="mosaic: mosaic pixels per heatmap pixel (default 4; 1 for "
                   "guided backpropagation)")
    x.add_argument("--window", type=hw, default=(7, 7), help="occlusion window in model-input pixels (default 7)")
    x.add_argument("--occlusion-stride", type=hw, help="occlusion stride (default: the window)")
    x.add_argument("--batch-size", type=positive, default=16)
    x.add_argument("--check", action="store_true", help="tiles: also run the sanity checks (model randomisation, "
                   "attribution on particle boundaries, deletion/insertion) into checks.json and figures")
    x.add_argument("--check-images", type=positive, default=8, help="tiles used by --check (default 8)")
    x.add_argument("--overwrite", action="store_true")
    x.add_argument("--restart", action="store_true", help="mosaic: ignore the record of an interrupted run")
    common(x)
    x.set_defaults(func=cmd_explain)
