"""`foclip build-engine DIR`: a TensorRT engine for one of a bundle's graphs."""

from __future__ import annotations

import argparse

from rich.markup import escape

from foclip.cli.common import console, err_console
from foclip.errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser("build-engine", help="build a TensorRT engine for a bundle graph (needs foclip[trt] + GPU)",
                       description="Build a strongly typed TensorRT engine (TensorRT 10.12 to 11.x) from one of a "
                                   "bundle's ONNX graphs with one optimisation profile, check it on the bundle's "
                                   "reference set, and keep the engine, the timing cache and the manifest entry in "
                                   "the bundle. The engine's precision is its graph's: an fp16 engine is built from "
                                   "image.fp16 / text.fp16 / detect.fp16.")
    p.add_argument("bundle", help="bundle folder written by `foclip export`")
    p.add_argument("--precision", default=None, help="fp16 (default) or fp32: picks the graph <encoder>.<precision>")
    p.add_argument("--batch", default="1,16,64", metavar="MIN,OPT,MAX", help="batch profile (default 1,16,64)")
    p.add_argument("--graph", default=None, metavar="KEY",
                   help="graph key to build from: image.fp16 (default), image.fp32, text.fp16, detect.fp16, ... "
                        "(`foclip inspect BUNDLE` lists them); the engine has its precision")
    # Removed in 0.3 (it repeated --graph); kept hidden so that an old command line gets one clear line.
    p.add_argument("--encoder", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.encoder is not None:
        raise InputError(f"--encoder {args.encoder}", "was removed (it repeated --graph)",
                         f"--graph {args.encoder}.{args.precision or 'fp16'}")
    # Lazy: the engine code loads numpy, PIL and (when it builds) TensorRT; `foclip --help` stays fast.
    from foclip.exporter.engine import EngineRequest, build_engine, check_request, graph_for, parse_profile

    graph = args.graph or graph_for("image", args.precision or "fp16")
    precision = args.precision or graph.partition(".")[2]
    req = check_request(EngineRequest(graph, precision, parse_profile(args.batch)))
    spec, built = build_engine(args.bundle, req, log=lambda s: err_console.print(f"[dim]{escape(s)}[/]", highlight=False))
    verb = "built" if built else "reused cached"
    console.print(f"{verb} {escape(spec.file)} from {spec.graph} (key {spec.key[:16]}…, TensorRT "
                  f"{spec.tensorrt_version}, sm {spec.compute_capability}); manifest updated", highlight=False)
    return 0
