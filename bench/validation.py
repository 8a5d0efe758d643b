"""Cost of the validation during training: one full-protocol evaluation of the validation
split with the model being trained (eiclip_core.train.validation) against one training step, same row.

    python bench/validation.py --data-dir data/quick          # quick size: 600 validation products, batch 64
    python bench/validation.py --data-dir data/smoke --batch-size 32 --row clip-ft

The data folder holds train.h5, validation.h5 and entities.json (`eiclip synth` and `eiclip mine`, or
notebooks 01 and 02, make them). Prints the median seconds of one training step (data loading included, as in
the loop) and of one evaluation, and their ratio: eval_every = N adds about ratio / N to a run's
training time (the split itself is read once per run).
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import eiclip_core  # noqa: F401  (offline environment)
from eiclip_core import layout
from eiclip_core.model.config import TrainConfig
from eiclip_core.train.distributed import DistInfo
from eiclip_core.entities import load_artifact
from eiclip_core.runtime import resolve_device
from eiclip_core.train.loop import prepare, train_step


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data/quick")
    parser.add_argument("--row", default="ei-clip")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="training steps timed (after one warm-up step)")
    parser.add_argument("--evals", type=int, default=3, help="evaluations timed (after one warm-up evaluation)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    data_dir = Path(args.data_dir)
    dist_info = DistInfo(device=resolve_device(args.device))
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(train=str(layout.split_file(data_dir, "train")),
                          val=str(layout.split_file(data_dir, "validation")),
                          entities=str(layout.entities_file(data_dir)), out=out, row=args.row,
                          batch_size=args.batch_size, eval_every=1, device=args.device)
        state, data, loss_fn = prepare(cfg, load_artifact(cfg.entities), dist_info)
        batches = data.micro_batches(cfg, 0, 0, dist_info)
        steps = [_timed(lambda: train_step(state, batches, loss_fn, cfg)) for _ in range(args.steps + 1)][1:]
        evals = [_timed(lambda: data.validation.recalls(state.model, state.device))
                 for _ in range(args.evals + 1)][1:]
    step, evaluation = statistics.median(steps), statistics.median(evals)
    print(f"{args.row}, {dist_info.device}, batch {args.batch_size}, {len(data.validation.product_ids)} validation "
          f"products")
    print(f"training step: {step:.3f} s (median of {len(steps)})")
    print(f"evaluation:    {evaluation:.3f} s (median of {len(evals)})")
    print(f"one evaluation = {evaluation / step:.2f} training steps")


if __name__ == "__main__":
    main()
