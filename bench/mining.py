"""Entity mining speed: EntityMiner (spaCy) versus a plain Python regex loop over the same patterns.

    .venv/bin/python bench/mining.py [--n 100000] [--patterns 5000] [--regex-n 1000] [--repeat 3] [--seed 0]

Descriptions are synthetic but shaped like Fashion-Gen's (about 30 words of garment vocabulary with
brand, category, material and fit mentions). The regex baseline compiles one case-insensitive
pattern per surface form (word-bounded) and loops over them for every text; it is timed on the
first --regex-n descriptions because it is far too slow for all of them, and its rate is per text,
so the two rates compare directly. Goal: at least 50k descriptions/s for the miner.
Last, --memory-n descriptions are streamed through EntityMiner.iter_find and the resident memory is
printed at each quarter: it should stay flat (the tokenizer cache is bounded, no Doc is kept).
"""
import argparse
import os
import random
import re
import statistics
import time

from eiclip_core.entities.miner import FIT_WORDS, EntityMiner
from eiclip_core.entities.vocab import surface_variants

CATEGORIES = ["tops", "t-shirts", "shirts", "sweaters", "jackets & coats", "pants", "jeans", "shorts",
              "dresses", "skirts", "sneakers", "boots", "bags", "hats", "scarves", "belts"]
MATERIALS = ["cotton", "wool", "polyamide", "polyester", "viscose", "leather", "silk", "linen",
             "elastane", "cashmere", "nylon", "calfskin", "lambskin", "acrylic", "modal"]
FILLER = ("long sleeve short crewneck collar logo printed at chest tonal stitching in black white "
          "navy grey button closure front patch pockets rib knit cuffs hem zip two-way zipper "
          "lined drawstring waistband welt pocket concealed press-stud round toe lace-up rubber "
          "sole embroidered graphic spread panelled vented back signature hardware adjustable "
          "strap textured jersey twill denim fleece quilted padded hood pleated trim throughout "
          "contrast shoulder raglan sleeves cropped length dropped shoulders French terry "
          "garment-dyed washed faded distressed stretch leg mid-rise five-pocket styling").split()


def make_data(n: int, n_patterns: int, seed: int):
    """(vocabulary with about n_patterns values, list of n descriptions)."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ven", "ra", "dos", "tel", "sa", "qu", "ber", "on", "zi", "mar", "el"]
    brands = set()
    while len(brands) < n_patterns - len(CATEGORIES) - len(MATERIALS):
        words = ["".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(rng.randint(1, 2))]
        brands.add(" ".join(words))
    vocabulary = {"brand": sorted(brands), "category": CATEGORIES, "composition": MATERIALS}
    return vocabulary, list(descriptions(vocabulary, n, rng))


def descriptions(vocabulary: dict, n: int, rng):
    """n synthetic descriptions, generated lazily (the memory check streams them)."""
    brands = vocabulary["brand"]
    for _ in range(n):
        words = rng.choices(FILLER, k=rng.randint(20, 34))
        words.insert(rng.randrange(len(words)), rng.choice(brands).title())
        words.insert(rng.randrange(len(words)), rng.choice(MATERIALS))
        if rng.random() < 0.5:
            words.insert(rng.randrange(len(words)), rng.choice(FIT_WORDS) + rng.choice(["-fit", " fit", ""]))
        words.append(rng.choice(CATEGORIES).split(" ")[0] + ".")
        yield " ".join(words).capitalize()


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the forked mining workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def rss_mb() -> float:
    """Resident memory of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0


def regex_loop(vocabulary, texts):
    """The baseline: one compiled regex per surface form, looped over every text."""
    patterns = []
    for t, values in vocabulary.items():
        for v in values:
            for form in surface_variants(v, t):
                patterns.append((re.compile(rf"(?<!\w){re.escape(form)}(?!\w)", re.IGNORECASE), t, v))
    fit = re.compile(rf"(?<!\w)({'|'.join(FIT_WORDS)})(?:-?\s?fit)?(?!\w)", re.IGNORECASE)
    out = []
    for text in texts:
        found = [(m.start(), m.end(), t, v) for rx, t, v in patterns for m in rx.finditer(text)]
        found += [(m.start(), m.end(), "fit", m.group(1).lower()) for m in fit.finditer(text)]
        out.append(found)
    return out, len(patterns) + 1


def longest(matches: set) -> set:
    """Longest first, then leftmost, without overlaps (the rule of spacy.util.filter_spans)."""
    kept, taken = set(), set()
    for m in sorted(matches, key=lambda m: (-(m[1] - m[0]), m[0])):
        if not taken & set(range(m[0], m[1])):
            kept.add(m)
            taken |= set(range(m[0], m[1]))
    return {m for m in matches if (m[0], m[1]) in {(k[0], k[1]) for k in kept}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000, help="descriptions for the miner")
    p.add_argument("--patterns", type=int, default=5000, help="known values (about)")
    p.add_argument("--regex-n", type=int, default=1000, help="descriptions for the regex baseline")
    p.add_argument("--processes", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes for the second miner timing (EntityMiner.find(n_process=...))")
    p.add_argument("--memory-n", type=int, default=300_000,
                   help="descriptions streamed for the memory check (0 = skip)")
    p.add_argument("--repeat", type=int, default=3, help="timings per miner setting; the median is reported")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    vocabulary, texts = make_data(args.n, args.patterns, args.seed)
    words = sum(len(t.split()) for t in texts) / len(texts)
    t0 = time.perf_counter()
    miner = EntityMiner(vocabulary)
    build = time.perf_counter() - t0
    miner.find(texts[:2000])  # warm the tokenizer cache, as any real run does after its first batch
    rates, spread = {}, {}
    for n_process in sorted({1, args.processes}):
        runs = []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), cpu_seconds()
            found = miner.find(texts, n_process=n_process)
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            runs.append((len(texts) / wall, len(texts) / cpu))
        rates[n_process] = tuple(statistics.median(r) for r in zip(*runs))
        spread[n_process] = (min(r[0] for r in runs), max(r[0] for r in runs))
    spacy_rate = max(r[0] for r in rates.values())

    sub = texts[: args.regex_n]
    t0, c0 = time.perf_counter(), cpu_seconds()
    found_rx, n_regex = regex_loop(vocabulary, sub)
    regex_rate = len(sub) / (time.perf_counter() - t0)
    regex_cpu_rate = len(sub) / (cpu_seconds() - c0)

    # Same answers? Compare known-value mentions after keeping the regex's longest, leftmost
    # non-overlapping matches (fit differs by design: the miner wants a context for "slim").
    same = sum({m for m in a if m[2] != "fit"} == longest({m for m in b if m[2] != "fit"})
               for a, b in zip(found, found_rx))
    print(f"{len(texts)} descriptions ({words:.1f} words on average), {sum(map(len, vocabulary.values()))} values, "
          f"{n_regex} regex patterns; matcher built in {build:.1f} s")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} while measuring "
          "(wall-clock rates shrink when other processes share the CPUs; CPU-time rates do not)")
    for n_process, (rate, cpu_rate) in rates.items():
        low, high = spread[n_process]
        print(f"EntityMiner (spaCy), {n_process} process{'es' if n_process > 1 else ''}:  {rate:,.0f} descriptions/s "
              f"wall clock (median of {args.repeat}, range {low:,.0f}-{high:,.0f}), {cpu_rate:,.0f} per CPU-second")
    print(f"mentions per description: {sum(map(len, found)) / len(found):.2f}")
    print(f"regex loop, 1 process:         {regex_rate:,.0f} descriptions/s wall clock, {regex_cpu_rate:,.0f} "
          f"per CPU-second (timed on {len(sub)} descriptions)")
    print(f"ratio (best miner / regex):    {spacy_rate / regex_rate:,.0f}x wall clock, "
          f"{rates[1][1] / regex_cpu_rate:,.0f}x per CPU-second (1 process each)")
    print(f"descriptions where miner and regex (longest matches) find the same known values: "
          f"{same}/{len(sub)}")
    print(f"goal >= 50,000 descriptions/s (wall clock): {'met' if spacy_rate >= 50_000 else 'NOT met'}")

    # Memory: stream --memory-n fresh descriptions (never held in a list), keep only a count.
    if args.memory_n:
        stream = descriptions(vocabulary, args.memory_n, random.Random(args.seed + 1))
        marks, n_mentions = [], 0
        for i, ms in enumerate(miner.iter_find(stream, total=args.memory_n), 1):
            n_mentions += len(ms)
            if i % (args.memory_n // 4) == 0:
                marks.append(f"{i // 1000}k: {rss_mb():.0f} MB")
        print(f"resident memory while streaming {args.memory_n:,} descriptions: " + ", ".join(marks))


if __name__ == "__main__":
    main()
