"""Benchmark: exact tiled recall@K (eiclip_core.evaluation.metrics) against the compute limit and two usual ways.

    .venv/bin/python bench/retrieval.py                 # N = 30k images and texts, d = 512
    .venv/bin/python bench/retrieval.py --large 100000  # also ours at 100k, with its memory bound
    .venv/bin/python bench/retrieval.py --n 3000        # quick check that it runs

Peers, mirrored from their sources:
- "argsort": open_clip_train.train.get_clip_metrics: logits = logit_scale * image @ text.T (full
  N x N), ranking = argsort(logits, descending=True) per direction, rank = where(ranking == gt).
- "topk-onehot": CLIP_benchmark metrics/zeroshot_retrieval: scores = text @ image.T (full N x N), a
  boolean N x N positive_pairs matrix, and per k and per batch of 64 queries (its default batch
  size) topk + one_hot(topk, N) * positives, summed; hit when > 0.
- "floor": the bare similarity work of a chunked exact method (4096-query chunks @ candidates.T, a
  fresh chunk each time, both directions, nothing else).
- "pass": one plain pass of S = images @ texts.T in the tiles ours uses, into one reused buffer: the
  FLOPs any exact method that looks at every score must do. Its process also measures the square
  float32 matmul peak (GFLOP/s); "limit" = the pass's FLOPs (2 N_img N_txt d) at that peak, and
  "x limit" is each method's time over it.

Each method runs in a fresh subprocess on the same seeded embeddings; peak memory = the subprocess's
peak resident set (VmHWM, reset through /proc/self/clear_refs just before the method starts) minus
its resident set at that moment (embeddings already in memory). A method whose resident memory passes 90 % of the machine's available memory is stopped and
said so. Times are wall-clock; the load average printed beside each line tells whether the machine
was shared.
Goal at N = 30k: ours within 1.5x the limit and under 1 GiB peak; at --large N, ours'
peak within its bound (two float32 tiles, a fixed workspace, and per-query vectors).
"""
import argparse
import json
import os
import subprocess
import sys
import time

METHODS = ("pass", "floor", "ours", "topk-onehot", "argsort")
KS = (1, 5, 10)
FLOOR_CHUNK = 4096  # queries per chunk of the floor's chunked method
PEAK_SIZE = 2048  # the square matmul that measures the peak: 17 GFLOP, big enough for full speed
# ours' memory beside its two float32 tiles: bounds with a margin over the peaks this bench prints
WORKSPACE_BYTES = 48 * 2**20  # the GEMM's packing buffers and the counting's temporaries
BYTES_PER_QUERY = 400  # per image or text query: positives, best scores, counts, sort orders


def make_embeddings(n, d, seed=0):
    """Images and matching texts (image + noise, renormalised), so recalls are neither 0 nor 100."""
    import torch
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    txt = torch.nn.functional.normalize(img + 5.0 * torch.randn(n, d, generator=g) / d ** 0.5, dim=1)
    return img, txt


def square_peak_gflops(reps=5):
    """Best of `reps` square float32 matmuls (after one warm-up), in GFLOP/s."""
    import torch
    a, b = torch.randn(PEAK_SIZE, PEAK_SIZE), torch.randn(PEAK_SIZE, PEAK_SIZE)
    out = torch.empty(PEAK_SIZE, PEAK_SIZE)
    torch.matmul(a, b, out=out)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * PEAK_SIZE ** 3 / best / 1e9


def run_pass(img, txt, chunk_size):
    """Every tile of S once, into one reused buffer, as ours computes them (and nothing else)."""
    import torch
    from eiclip_core.evaluation.metrics import TileGrid
    grid = TileGrid.for_pass(len(img), len(txt), chunk_size, img.device)
    buf = torch.empty(grid.rows, grid.cols)
    for r_start, _, _ in grid.spans(0):
        for c_start, _, _ in grid.spans(1):
            torch.matmul(img[r_start:r_start + grid.rows], txt[c_start:c_start + grid.cols].T, out=buf)
    return None


def run_floor(img, txt, chunk_size):
    for q, c in ((img, txt), (txt, img)):
        for s in range(0, len(q), FLOOR_CHUNK):
            q[s:s + FLOOR_CHUNK] @ c.T
    return None


def run_ours(img, txt, chunk_size):
    import numpy as np
    from eiclip_core.evaluation.metrics import retrieval_metrics
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
    peak_gflops = square_peak_gflops() if method == "pass" else None
    fn = {"pass": run_pass, "floor": run_floor, "ours": run_ours, "argsort": run_argsort,
          "topk-onehot": run_topk_onehot}[method]
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    base = rss_bytes()
    t0 = time.perf_counter()
    with torch.no_grad():
        metrics = fn(img, txt, chunk_size)
    seconds = time.perf_counter() - t0
    peak = peak_rss_bytes() - base
    print(json.dumps({"seconds": seconds, "peak_bytes": peak, "metrics": metrics, "peak_gflops": peak_gflops}))


def measure(method, n, d, chunk_size, limit_bytes):
    """Run one method in a subprocess; kill it (result None) if its RSS passes limit_bytes."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", method, "--n", str(n), "--dim", str(d),
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


def report(n, method, r, results, limit_s):
    """One table line: time, ratios to the floor and to the limit, peak memory, agreement with ours."""
    ratio = r["seconds"] / results["floor"]["seconds"] if "floor" in results else float("nan")
    agree = ""
    if method == "pass":
        agree = f"peak {r['peak_gflops']:.0f} GFLOP/s: limit {limit_s:.2f} s"
    elif r["metrics"] and method != "ours" and "ours" in results:
        diff = max(abs(r["metrics"][k] - results["ours"]["metrics"][k]) for k in r["metrics"])
        # CLIP_benchmark averages in float32, so allow its rounding (1e-4 points)
        agree = "same" if diff < 1e-4 else f"DIFFER by up to {diff:.4f} points"
    elif method == "ours":
        agree = " ".join(f"{k}={v:.2f}" for k, v in r["metrics"].items())
    print(f"{n:>7} {method:>12} {r['seconds']:>9.2f} {ratio:>8.2f} {r['seconds'] / limit_s:>8.2f} "
          f"{r['peak_bytes'] / 2**20:>9.0f}  {agree}  (load {os.getloadavg()[0]:.1f})", flush=True)


def memory_bound(n, chunk_size):
    """Ours' peak at N images and N texts: two float32 tiles, the workspace, and per-query vectors."""
    from eiclip_core.evaluation.metrics import TileGrid
    grid = TileGrid.for_pass(n, n, chunk_size, "cpu")
    return 2 * 4 * grid.rows * grid.cols + WORKSPACE_BYTES + BYTES_PER_QUERY * 2 * n


def main():
    from eiclip_core.evaluation.metrics import TILE_ROWS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", "--sizes", dest="sizes", type=int, nargs="+", default=[30_000],
                        help="numbers of images (= texts) to measure at")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunk-size", type=int, default=TILE_ROWS,
                        help="image rows per tile of ours and the pass")
    parser.add_argument("--large", type=int, default=0, help="also ours at this N (e.g. 100000), with its "
                        "memory bound")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="which methods to run (pass and floor first: the others are compared with them)")
    parser.add_argument("--child", choices=METHODS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.sizes[0], args.dim, args.chunk_size)

    import torch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, d={args.dim}, "
          f"chunk_size={args.chunk_size}, machine memory {machine_bytes() / 2**30:.1f} GiB")
    print(f"{'N':>7} {'method':>12} {'seconds':>9} {'x floor':>8} {'x limit':>8} {'peak MiB':>9}  "
          f"recalls agree with ours")
    for n in args.sizes:
        results, limit_s = {}, float("nan")
        for method in [m for m in METHODS if m in args.methods]:
            limit = 0.9 * available_bytes()  # what this machine can give now (others may be using some)
            r = measure(method, n, args.dim, args.chunk_size, limit)
            if r is None:
                print(f"{n:>7} {method:>12}  stopped: its memory passed {limit / 2**30:.1f} GiB, "
                      f"the memory available on this machine", flush=True)
                continue
            results[method] = r
            if method == "pass":
                limit_s = 2 * n * n * args.dim / (r["peak_gflops"] * 1e9)
            report(n, method, r, results, limit_s)
        if n == 30_000 and "ours" in results and "pass" in results:
            ok_time = results["ours"]["seconds"] <= 1.5 * limit_s
            ok_mem = results["ours"]["peak_bytes"] < 2**30
            print(f"goal at N=30k: within 1.5x the limit {'met' if ok_time else 'NOT met'}, "
                  f"peak < 1 GiB {'met' if ok_mem else 'NOT met'}")
    if args.large:
        n, bound = args.large, memory_bound(args.large, args.chunk_size)
        r = measure("ours", n, args.dim, args.chunk_size, 0.9 * available_bytes())
        print(f"{n:>7} {'ours':>12} {r['seconds']:>9.2f} {'':>8} {'':>8} {r['peak_bytes'] / 2**20:>9.0f}  "
              f"bound: 2 tiles + {WORKSPACE_BYTES // 2**20} MiB + {BYTES_PER_QUERY} B x {2 * n} queries = "
              f"{bound / 2**20:.0f} MiB "
              f"({'within' if r['peak_bytes'] <= bound else 'OVER'})  (load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
