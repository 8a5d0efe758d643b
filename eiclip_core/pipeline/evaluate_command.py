"""`eiclip evaluate`: evaluate a profile's runs under the three protocols and write the results table.

    eiclip evaluate --profile smoke                     # data/smoke -> reports/smoke/results.{json,md}
    eiclip evaluate --profile quick --device cuda

The profile says which rows, seeds and backbone to evaluate and how many sample-100 queries to draw;
the evaluation itself is eiclip_core.evaluation.evaluate.evaluate_runs. Notebook 04 calls
`evaluate_profile` too.
"""
from eiclip_core.evaluation.embeddings import ENCODE_BATCH
from eiclip_core.evaluation.evaluate import Evaluation, evaluate_runs, write_results
from eiclip_core.pipeline.profiles import Profile, get_profile
from eiclip_core.protocols import PROTOCOLS


def evaluate_profile(profile: "Profile | str", data_dir, device="auto", seed: int = 0, batch_size: int = ENCODE_BATCH,
                     protocols=PROTOCOLS) -> Evaluation:
    """Evaluate the zero-shot row and every trained run of `profile` (a Profile or its name) on
    `data_dir`'s validation split (evaluate_runs)."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    return evaluate_runs(data_dir, profile.rows, profile.seeds, profile.train.backbone, profile.train.pretrained,
                         profile=profile.name, published=profile.real_data,
                         sample100_queries=profile.sample100_queries, device=device, seed=seed,
                         batch_size=batch_size, protocols=protocols)


def add_arguments(parser) -> None:
    parser.add_argument("--profile", default="smoke", help="profile name (eiclip_core/pipeline/profiles.py)")
    parser.add_argument("--data-dir", default=None, help="default: data/<profile> (data/fashiongen for real data)")
    parser.add_argument("--reports", default=None, help="default: reports/<profile>")
    parser.add_argument("--device", default="auto", help='"auto" (cuda if available), "cpu", "cuda", ...')
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample-100 draws and the bootstrap")
    parser.add_argument("--batch-size", type=int, default=ENCODE_BATCH)


def run(args) -> int:
    from eiclip_core.evaluation.results import display_table, to_markdown
    from eiclip_core.pipeline.reproduce import default_dirs

    profile = get_profile(args.profile)
    default_data, default_reports = default_dirs(profile)
    evaluation = evaluate_profile(profile, args.data_dir or default_data, device=args.device, seed=args.seed,
                                  batch_size=args.batch_size)
    json_path, md_path = write_results(evaluation, args.reports or default_reports)
    print(to_markdown(display_table(evaluation.summary)))
    print(f"wrote {json_path} and {md_path}")
    return 0
