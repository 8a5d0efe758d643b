"""`eiclip` command line: one subcommand per job, each defined in the module that owns the job.

Each module named in COMMANDS provides `add_arguments(parser)` and `run(args) -> int`; this file
only dispatches, so adding a command never touches another module's code. Only the chosen
command's module is imported (torch and friends take seconds to import).
"""
import argparse
import importlib
import os
import sys

from eiclip_core.errors import KitError

# subcommand -> (module, one-line help)
COMMANDS = {
    "synth": ("eiclip_core.pipeline.synth_command", "generate the Fashion-Gen-like default data set"),
    "check-data": ("eiclip_core.data.check", "validate Fashion-Gen HDF5 files"),
    "import-catalog": ("eiclip_core.data.importer", "import a product table and its images as Fashion-Gen files"),
    "mine": ("eiclip_core.entities.mine", "mine entity vocabularies and mentions into an artifact"),
    "pretrain": ("eiclip_core.train.pretrain_general", "pretrain the general-domain tiny CLIP (the default backbone's weights)"),
    "train": ("eiclip_core.train.loop", "train CLIP-FT / EI-CLIP (single process or torchrun)"),
    "evaluate": ("eiclip_core.pipeline.evaluate_command", "evaluate runs under the retrieval protocols"),
    "reproduce": ("eiclip_core.pipeline.reproduce", "run notebooks 01-05 with papermill into reports/"),
}


def build_parser(argv=None) -> argparse.ArgumentParser:
    chosen = next((a for a in (sys.argv[1:] if argv is None else argv) if a in COMMANDS), None)
    parser = argparse.ArgumentParser(prog="eiclip", description=__doc__.splitlines()[0])
    parser.add_argument("--allow-downloads", action="store_true",
                        help="let open_clip / Hugging Face reach their hubs for pretrained weights")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).add_arguments(sub_parser)
        sub_parser.set_defaults(_module=module)
    return parser


def main(argv=None) -> int:
    args = build_parser(argv).parse_args(argv)
    if args.allow_downloads:
        os.environ["HF_HUB_OFFLINE"] = "0"
        os.environ["TRANSFORMERS_OFFLINE"] = "0"
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
