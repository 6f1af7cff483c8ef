"""``course-lib data list|download NAME``."""
from __future__ import annotations

from ..data import DATASETS, download, is_available


def register(sub) -> None:
    p = sub.add_parser("data", help="list or download datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    ls = dsub.add_parser("list", help="every dataset, whether it is available, and why")
    ls.add_argument("--json", action="store_true", help="print machine-readable JSON")
    ls.set_defaults(func=run_list)
    dl = dsub.add_parser("download", help="download a dataset into the data root")
    dl.add_argument("name", help="dataset name, e.g. cifar10")
    dl.add_argument("--json", action="store_true", help="print machine-readable JSON")
    dl.set_defaults(func=run_download)


def run_list(args) -> int:
    from .common import emit

    rows = []
    for name, spec in ((e.name, e.obj) for e in DATASETS.entries()):
        ok, why = is_available(name)
        rows.append({"name": name, "available": ok, "embedded": spec.embedded, "why": why,
                     "description": spec.description})
    text = "\n".join(f"{'yes' if r['available'] else 'no ':<4}{r['name']:<14} {r['description']} -- {r['why']}"
                     for r in rows)
    emit(rows, args.json, text + "\nAlso: folder:PATH reads an ImageFolder tree (train/<class>/*, test/<class>/*).")
    return 0


def run_download(args) -> int:
    from .common import emit

    path = download(args.name)
    msg = (f"{args.name} ships inside an installed package; nothing to download."
           if DATASETS.get(args.name).embedded else f"{args.name} downloaded to {path}")
    emit({"name": args.name, "path": str(path)}, args.json, msg)
    return 0
