"""Pretraining speed of the general backbone: images/s of a LiT step and the image tower's share of it.

    python bench/pretrain.py [--steps 20] [--batch-size 256]

Times full steps (forward, loss, backward, AdamW) on generated corpus images with cached text
features, then the image tower's forward + backward alone on the same batches; prints the median
of the per-step times. Take figures on a quiet machine (`uptime` load under 1).
"""
import argparse
import statistics
import time

import torch

from eiclip_core.model.backbone import RANDOM_INIT, load_backbone
from eiclip_core.synth.general_corpus import make_corpus
from eiclip_core.train.pretrain_general import (PretrainConfig, lit_loss, normalise_images, pooled_text_features,
                                          trainable_parameters)


def timed(fn, steps: int) -> float:
    """Median seconds of `fn()` over `steps` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=PretrainConfig.batch_size)
    args = parser.parse_args()
    torch.manual_seed(0)
    backbone = load_backbone("eiclip-tiny", RANDOM_INIT)
    clip, tokenizer = backbone.model, backbone.tokenizer
    corpus = make_corpus(args.batch_size, PretrainConfig.image_size, 0, progress=False)
    features, ids = pooled_text_features(clip, tokenizer, corpus.captions, progress=False)
    images = normalise_images(corpus.images, clip.visual.image_mean, clip.visual.image_std)
    optimizer = torch.optim.AdamW(trainable_parameters(clip), lr=1e-4)
    clip.train()

    def full_step():
        loss = lit_loss(clip.encode_image(images), clip.text.proj(features[ids]), ids, clip.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def image_tower():
        clip.encode_image(images).sum().backward()

    step = timed(full_step, args.steps)
    tower = timed(image_tower, args.steps)
    print(f"threads {torch.get_num_threads()}, batch {args.batch_size}, {args.steps} steps (median)")
    print(f"full LiT step: {step * 1000:.0f} ms = {args.batch_size / step:.0f} images/s")
    print(f"image tower forward + backward: {tower * 1000:.0f} ms = {100 * tower / step:.0f} % of the step")


if __name__ == "__main__":
    main()
