"""`eiclip synth`: a profile's generated data set (the generator is eiclip_core.synth; the sizes, knob and
image size are the profile's, eiclip_core.pipeline.profiles, unless given).

    eiclip synth --out data/smoke --profile smoke         # a few seconds
    eiclip synth --out data/q --profile quick --seed 1 --confounding 0.5
"""
from eiclip_core.errors import KitError
from eiclip_core.pipeline.profiles import PROFILES, get_profile


def profile_draw(profile: str, seed: int = 0, confounding=None, image_size=None, n_train=None, n_val=None) -> dict:
    """The generator's arguments (eiclip_core.synth.generate) for a draw of `profile`; None (or 0 products)
    means the profile's value."""
    prof = get_profile(profile)
    if not prof.n_train_products:
        raise KitError(f"profile {profile!r}: uses real data, not generated data (choose smoke or quick)")
    return {"profile": profile, "seed": seed,
            "confounding": prof.confounding if confounding is None else confounding,
            "image_size": prof.image_size if image_size is None else image_size,
            "n_train": n_train or prof.n_train_products, "n_val": n_val or prof.n_val_products}


def generate_profile_data(out_dir, profile: str, seed: int = 0, confounding=None, image_size=None,
                          n_train=None, n_val=None) -> dict:
    """`generate` a draw of `profile` under out_dir (see profile_draw); returns {name: Path}."""
    from eiclip_core.synth import generate

    return generate(out_dir, **profile_draw(profile, seed, confounding, image_size, n_train, n_val))


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="output folder (train.h5, validation.h5, ground_truth.json)")
    generated = [name for name, prof in PROFILES.items() if prof.n_train_products > 0]
    parser.add_argument("--profile", default="smoke", choices=generated, help="sizes (eiclip_core.pipeline.profiles)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--confounding", type=float, default=None,
                        help="fraction of entity values that are misleading ordinary words, in [0, 1] "
                             "(default: the profile's)")
    parser.add_argument("--image-size", type=int, default=None, help="pixels (default: the profile's)")


def run(args) -> int:
    paths = generate_profile_data(args.out, args.profile, seed=args.seed, confounding=args.confounding,
                                  image_size=args.image_size)
    for path in paths.values():
        print(f"wrote {path}")
    return 0
