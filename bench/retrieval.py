"""Benchmark: exact chunked recall@K (eiclip_core.metrics) against the two usual ways of computing it.

    .venv/bin/python bench/retrieval.py                 # N = 10k and 30k, d = 512, plus ours at 100k
    .venv/bin/python bench/retrieval.py --sizes 10000   # quicker

Peers, mirrored from their sources:
- "argsort": open_clip_train.train.get_clip_metrics: logits = logit_scale * image @ text.T (full
  N x N), ranking = argsort(logits, descending=True) per direction, rank = where(ranking == gt).
- "topk-onehot": CLIP_benchmark metrics/zeroshot_retrieval: scores = text @ image.T (full N x N), a
  boolean N x N positive_pairs matrix, and per k and per batch of 64 queries (its default batch
  size) topk + one_hot(topk, N) * positives, summed; hit when > 0.
- "floor": the bare chunked similarity computation our method does (query chunk @ candidates.T,
  both directions, nothing else): no exact method that looks at every score can beat it.

Each method runs in a fresh subprocess on the same seeded embeddings; peak memory = the subprocess's
peak resident set (VmHWM, reset through /proc/self/clear_refs just before the method starts) minus
its resident set at that moment (embeddings already in memory). A method whose resident memory passes 90 % of the machine's available memory is stopped and
said so. Times are wall-clock; the load average printed beside each line tells whether the machine
was shared.
Goal (issue 5) at N = 30k: ours within 2x the floor and under 1 GB peak.
"""
import argparse
import json
import os
import subprocess
import sys
import time

METHODS = ("floor", "ours", "topk-onehot", "argsort")
KS = (1, 5, 10)


def make_embeddings(n, d, seed=0):
    """Images and matching texts (image + noise, renormalised), so recalls are neither 0 nor 100."""
    import torch
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    txt = torch.nn.functional.normalize(img + 5.0 * torch.randn(n, d, generator=g) / d ** 0.5, dim=1)
    return img, txt


def run_floor(img, txt, chunk_size):
    for q, c in ((img, txt), (txt, img)):
        for s in range(0, len(q), chunk_size):
            q[s:s + chunk_size] @ c.T
    return None


def run_ours(img, txt, chunk_size):
    import numpy as np
    from eiclip_core.metrics import retrieval_metrics
    pids = np.arange(len(img))
    return retrieval_metrics(img, txt, pids, pids, ks=KS, chunk_size=chunk_size)


def run_argsort(img, txt, chunk_size):
    """open_clip_train get_clip_metrics, restricted to the recall keys and renamed to ours."""
    import numpy as np
    import torch
    logit_scale = torch.tensor(100.0)
    logits_per_image = (logit_scale * img @ txt.t()).detach().cpu()
    logits_per_text = logits_per_image.t().detach().cpu()
    ground_truth = torch.arange(len(txt)).view(-1, 1)
    out = {}
    for name, logit in (("i2t", logits_per_image), ("t2i", logits_per_text)):
        ranking = torch.argsort(logit, descending=True)
        preds = torch.where(ranking == ground_truth)[1].numpy()
        del ranking
        for k in KS:
            out[f"{name}_r{k}"] = 100.0 * float(np.mean(preds < k))
    return out


def run_topk_onehot(img, txt, chunk_size, batch_size=64):
    """CLIP_benchmark zeroshot_retrieval.evaluate after the embeddings, with its recall_at_k/batchify."""
    import torch

    def recall_at_k(scores, positive_pairs, k):
        nb_texts, nb_images = scores.shape
        topk_indices = torch.topk(scores, k, dim=1)[1]
        nb_positive = positive_pairs.sum(dim=1)
        topk_indices_onehot = torch.nn.functional.one_hot(topk_indices, num_classes=nb_images)
        positive_pairs_reshaped = positive_pairs.view(nb_texts, 1, nb_images)
        nb_true_positive = (topk_indices_onehot * positive_pairs_reshaped).sum(dim=(1, 2))
        return nb_true_positive / nb_positive

    def batchify(func, X, Y, batch_size, *args, **kwargs):
        return torch.cat([func(X[s:s + batch_size], Y[s:s + batch_size], *args, **kwargs)
                          for s in range(0, len(X), batch_size)])

    texts_image_index = torch.arange(len(txt))
    scores = txt @ img.t()
    positive_pairs = torch.zeros_like(scores, dtype=bool)
    positive_pairs[torch.arange(len(scores)), texts_image_index] = True
    out = {}
    for k in KS:
        out[f"t2i_r{k}"] = 100.0 * (batchify(recall_at_k, scores, positive_pairs, batch_size, k=k) > 0
                                    ).float().mean().item()
        out[f"i2t_r{k}"] = 100.0 * (batchify(recall_at_k, scores.T, positive_pairs.T, batch_size, k=k) > 0
                                    ).float().mean().item()
    return out


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes():
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def child(method, n, d, chunk_size):
    """Runs in the subprocess: one method, prints a JSON line with seconds, peak bytes, recalls."""
    import torch
    img, txt = make_embeddings(n, d)
    fn = {"floor": run_floor, "ours": run_ours, "argsort": run_argsort, "topk-onehot": run_topk_onehot}[method]
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    base = rss_bytes()
    t0 = time.perf_counter()
    with torch.no_grad():
        metrics = fn(img, txt, chunk_size)
    seconds = time.perf_counter() - t0
    peak = peak_rss_bytes() - base
    print(json.dumps({"seconds": seconds, "peak_bytes": peak, "metrics": metrics}))


def measure(method, n, d, chunk_size, limit_bytes):
    """Run one method in a subprocess; kill it (result None) if its RSS passes limit_bytes."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", method, "--sizes", str(n), "--dim", str(d),
                             "--chunk-size", str(chunk_size)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    peak_seen = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/statm") as f:
                peak_seen = max(peak_seen, int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
        except OSError:
            pass
        if peak_seen > limit_bytes:
            proc.kill()
            proc.wait()
            return None
        time.sleep(0.2)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{method} at N={n} failed:\n{err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def available_bytes():
    with open("/proc/meminfo") as f:
        info = dict(line.split(":") for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024


def machine_bytes():
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--large", type=int, default=100_000, help="N for ours only (issue 8); 0 = skip")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="which methods to run (floor first: the others are compared with it)")
    parser.add_argument("--child", choices=METHODS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.sizes[0], args.dim, args.chunk_size)

    import torch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, d={args.dim}, "
          f"chunk_size={args.chunk_size}, machine memory {machine_bytes() / 2**30:.1f} GiB")
    print(f"{'N':>7} {'method':>12} {'seconds':>9} {'x floor':>8} {'peak MiB':>9}  recalls agree with ours")
    for n in args.sizes:
        results = {}
        for method in [m for m in METHODS if m in args.methods]:
            limit = 0.9 * available_bytes()  # what this machine can give now (others may be using some)
            r = measure(method, n, args.dim, args.chunk_size, limit)
            if r is None:
                print(f"{n:>7} {method:>12}  stopped: its memory passed {limit / 2**30:.1f} GiB, "
                      f"the memory available on this machine", flush=True)
                continue
            results[method] = r
            ratio = r["seconds"] / results["floor"]["seconds"] if "floor" in results else float("nan")
            agree = ""
            if r["metrics"] and method != "ours" and "ours" in results:
                diff = max(abs(r["metrics"][k] - results["ours"]["metrics"][k]) for k in r["metrics"])
                # CLIP_benchmark averages in float32, so allow its rounding (1e-4 points)
                agree = "same" if diff < 1e-4 else f"DIFFER by up to {diff:.4f} points"
            elif method == "ours":
                agree = " ".join(f"{k}={v:.2f}" for k, v in r["metrics"].items())
            print(f"{n:>7} {method:>12} {r['seconds']:>9.2f} {ratio:>8.2f} {r['peak_bytes'] / 2**20:>9.0f}  {agree}"
                  f"  (load {os.getloadavg()[0]:.1f})", flush=True)
        if n == 30_000 and "ours" in results and "floor" in results:
            ok_time = results["ours"]["seconds"] <= 2 * results["floor"]["seconds"]
            ok_mem = results["ours"]["peak_bytes"] < 2**30
            print(f"goal at N=30k: within 2x floor {'met' if ok_time else 'NOT met'}, "
                  f"peak < 1 GiB {'met' if ok_mem else 'NOT met'}")
    if args.large:
        n = args.large
        r = measure("ours", n, args.dim, args.chunk_size, 0.9 * available_bytes())
        bound = (args.chunk_size * 4 + 256 * 5) * n  # float32 scores of a chunk + masks of 256 rows
        print(f"{n:>7} {'ours':>12} {r['seconds']:>9.2f} {'':>8} {r['peak_bytes'] / 2**20:>9.0f}  "
              f"chunk bound ({args.chunk_size} x 4 B + 256 x 5 B) x {n} = {bound / 2**20:.0f} MiB "
              f"({'within' if r['peak_bytes'] <= 1.1 * bound else 'OVER'})")


if __name__ == "__main__":
    main()
