#!/usr/bin/env python3
"""SPEC §4's reference check: this project's N-layer branches (asa_ref.sparse_branches, with
selection_share 1 and selection_block_size = block_size) against the naive oracles of
fla-org/flash-linear-attention v0.5.2 (fla/ops/nsa/naive.py: naive_nsa_compression, naive_nsa_topk,
naive_nsa_selection), given the same q, k, v, on random inputs, CPU tensors.

Usage: check_fla.py FLA_COPY [--cases N] [--seed S] [--fp64]
FLA_COPY is a local, git-ignored copy holding fla/ops/nsa/naive.py (e.g. the repository's .fla/; see
README.md for how to make it). Nothing of fla is committed here. fla's naive.py imports fla.ops.utils
(Triton) for its varlen and pooling helpers only; the three functions used here never call them, so those
modules are replaced by stand-ins that raise if called. einops is used when installed; otherwise a
stand-in for the single pattern naive.py uses ('b t h d -> b t (h g) d', i.e. head i reads KV head
i // g) is installed, and the script says so. fla casts q, k, v to fp32 in its compression and
selection oracles; --fp64 promotes those casts to fp64 when loading (in memory only), which turns
"agreement to fp32 rounding" into agreement to fp64 rounding.
"""
import argparse
import os
import sys
import types

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import asa_ref  # noqa: E402


def _unavailable(name):
    def f(*args, **kwargs):
        raise RuntimeError(f"{name} is not available in this stripped fla copy (varlen / Triton path)")
    return f


def load_fla_naive(root, fp64):
    path = root if root.endswith(".py") else os.path.join(root, "fla", "ops", "nsa", "naive.py")
    if not os.path.isfile(path):
        sys.exit(f"check_fla: {path} not found (see tools/reference/README.md)")
    try:
        import einops  # noqa: F401
    except ImportError:
        print("note: einops is not installed; using a stand-in for repeat('b t h d -> b t (h g) d', g=G)")
        ein = types.ModuleType("einops")

        def repeat(x, pattern, g):
            if pattern.replace(" ", "") != "bthd->bt(hg)d":
                raise NotImplementedError(f"einops stand-in: pattern '{pattern}'")
            return x.repeat_interleave(g, dim=2)   # (h g): g varies fastest, so head i <- KV head i // g
        ein.repeat = repeat
        sys.modules["einops"] = ein
    for name in ("fla", "fla.ops", "fla.ops.utils", "fla.ops.utils.pooling"):
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
    sys.modules["fla.ops.utils"].prepare_chunk_offsets = _unavailable("prepare_chunk_offsets")
    sys.modules["fla.ops.utils.pooling"].mean_pooling = _unavailable("mean_pooling")
    with open(path) as f:
        src = f.read()
    if fp64:
        if src.count("x.float()") != 2:
            sys.exit("check_fla: --fp64 expects exactly two 'x.float()' casts in naive.py")
        src = src.replace("x.float()", "x.double()")
    mod = types.ModuleType("fla_nsa_naive")
    mod.__file__ = path
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "flash_attn not installed": its window path is not used
        exec(compile(src, path, "exec"), mod.__dict__)
    return mod


def fla_style_pool(x, b):
    """What fla's mean_pooling returns: ceil(T/b) blocks, the trailing partial block averaged over the
    tokens it has. The partial block never enters a softmax (it is not complete); fla's top-k needs its
    column to exist so that the current block can be forced."""
    Bx, T = x.shape[:2]
    nb = -(-T // b)
    out = torch.zeros((Bx, nb) + tuple(x.shape[2:]), dtype=x.dtype)
    for m in range(nb):
        out[:, m] = x[:, m * b:min(T, (m + 1) * b)].mean(dim=1)
    return out


def sets_of(idx):
    """[B, T, H, S] -> nested lists of sets without -1."""
    return [[[{int(u) for u in idx[bb, t, j] if u >= 0} for j in range(idx.shape[2])]
             for t in range(idx.shape[1])] for bb in range(idx.shape[0])]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("fla_copy", help="directory holding fla/ops/nsa/naive.py, or that file")
    ap.add_argument("--cases", type=int, default=16)
    ap.add_argument("--seed", type=int, default=2025)
    ap.add_argument("--fp64", action="store_true", help="run fla's compression/selection oracles in fp64")
    args = ap.parse_args()
    fla = load_fla_naive(args.fla_copy, args.fp64)
    tol = 1e-12 if args.fp64 else 1e-5
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)

    worst = {"o_cmp": 0.0, "o_slc": 0.0}
    total_sets = total_mism = total_mism32 = 0
    for case in range(args.cases):
        T = int(rng.integers(129, 301))
        b = 16 if case % 2 == 0 else 32
        n = int(rng.integers(4, 17))
        H = int(rng.choice([1, 2]))
        G = int(rng.choice([1, 2, 4, 16]))
        Bn = 2 if H * G <= 8 else 1
        D = int(rng.choice([16, 32, 64]))
        HQ = H * G
        scale = D ** -0.5
        q = torch.randn(Bn, T, HQ, D, dtype=torch.float64)
        k = torch.randn(Bn, T, H, D, dtype=torch.float64)
        v = torch.randn(Bn, T, H, D, dtype=torch.float64)

        # this project's reference: per-query-head K/V (head i reads KV head i // G), R = 1, b_s = b
        kh, vh = k.repeat_interleave(G, dim=2), v.repeat_interleave(G, dim=2)
        o_cmp, o_slc, idx, _ = asa_ref.sparse_branches(q, kh, vh, H, b, b, n, 1, scale)

        k_cmp, v_cmp = fla_style_pool(k, b), fla_style_pool(v, b)
        f_cmp, _ = fla.naive_nsa_compression(q, k_cmp, v_cmp, b, scale)              # fp32 unless --fp64
        f_idx = fla.naive_nsa_topk(q, k_cmp, n, b, scale)                             # input dtype (fp64)
        f_idx32 = fla.naive_nsa_topk(q.float(), k_cmp.float(), n, b, scale)           # fp32 scores
        f_slc = fla.naive_nsa_selection(q, k, v, f_idx, b, scale)                     # fp32 unless --fp64

        d_cmp = (o_cmp - f_cmp.double()).abs().max().item()
        d_slc = (o_slc - f_slc.double()).abs().max().item()
        mine, theirs, theirs32 = sets_of(idx), sets_of(f_idx), sets_of(f_idx32)
        mism = [(bb, t, j) for bb in range(Bn) for t in range(T) for j in range(H)
                if mine[bb][t][j] != theirs[bb][t][j]]
        mism32 = sum(mine[bb][t][j] != theirs32[bb][t][j] for bb in range(Bn) for t in range(T) for j in range(H))
        nsets = Bn * T * H
        worst["o_cmp"] = max(worst["o_cmp"], d_cmp)
        worst["o_slc"] = max(worst["o_slc"], d_slc)
        total_sets += nsets
        total_mism += len(mism)
        total_mism32 += mism32
        print(f"case {case:2d}: B {Bn} T {T:3d} H {H} HQ {HQ:2d} D {D:2d} block {b} n {n:2d} | "
              f"max|o_cmp diff| {d_cmp:.2e}  max|o_slc diff| {d_slc:.2e}  "
              f"set mismatches {len(mism)}/{nsets} (fp32 top-k: {mism32})")
        for (bb, t, j) in mism[:5]:
            print(f"    b {bb} t {t} head {j}: reference {sorted(mine[bb][t][j])}  fla {sorted(theirs[bb][t][j])}")
    ok = worst["o_cmp"] < tol and worst["o_slc"] < tol and total_mism == 0
    print(f"summary: {args.cases} cases, max|o_cmp diff| {worst['o_cmp']:.2e}, max|o_slc diff| "
          f"{worst['o_slc']:.2e} (fla in {'fp64' if args.fp64 else 'fp32'}, tolerance {tol:g}), block-set mismatches {total_mism}/{total_sets} "
          f"with fp64 scores, {total_mism32}/{total_sets} with fp32 scores -> {'AGREE' if ok else 'DISAGREE'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
