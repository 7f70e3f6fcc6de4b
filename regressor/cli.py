"""`regressor` console script.

``fit | validate | test | predict`` go to LightningCLI (see ``regressor.training.cli``); the
helper subcommands below are plain argparse programs, each living next to the code it drives.
A subcommand is registered by one line here and imported lazily, so ``regressor synth`` does
not pay for importing Lightning.
"""
from __future__ import annotations

import importlib
import sys

HELPER_COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module:function, one-line help)
    "model": ("regressor.face_model.cli:main", "build/inspect the face model, export .obj files"),
    "synth": ("regressor.synthetic.synth_cli:main", "write a synthetic dataset with ground truth to disk"),
    "contact-sheet": ("regressor.synthetic.contact_sheet:main", "png grid of synthetic samples"),
    "optimize": ("regressor.fitting_cli:main", "per-image iterative fitting (optionally with the critic)"),
    "landmarks": ("regressor.detect.cli:main", "detect 68 iBUG landmarks offline (needs the [detect] extra)"),
    "evaluate": ("regressor.evaluation.evaluate_cli:main", "NoW error of predicted meshes against scans (.obj/.ply)"),
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def _usage() -> str:
    lines = ["usage: regressor <command> [options]", "", "Lightning commands (see --help of each):"]
    lines += [f"  {name}" for name in LIGHTNING_COMMANDS]
    lines += ["", "Helper commands:"]
    lines += [f"  {name:<14} {help_}" for name, (_, help_) in HELPER_COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command = argv[0]
    if command in HELPER_COMMANDS:
        target, _ = HELPER_COMMANDS[command]
        module_name, function_name = target.split(":")
        function = getattr(importlib.import_module(module_name), function_name)
        return function(argv[1:])
    if command == "predict" and not any(a in ("--config", "-c") or a.startswith("--config=") for a in argv[1:]):
        # No training config: plain inference with the shipped (or a given) regressor.
        from regressor.predict_cli import main as predict_main

        return predict_main(argv[1:])
    if command in LIGHTNING_COMMANDS:
        from regressor.training.cli import run_lightning_cli

        run_lightning_cli(argv)
        return 0
    print(f"regressor: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
