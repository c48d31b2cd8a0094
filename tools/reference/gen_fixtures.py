#!/usr/bin/env python3
"""Writes tests/fixtures/<name>/{config.json,fixture.safetensors}: small models of every layer kind with
their float64 reference outputs (asa_ref.py) stored as F32, after self-checks of the reference itself.

Each fixture holds every parameter, tokens/targets (I32 [B, T]), logits, loss, grad.<param>,
hidden.<l> (residual stream after layer l) and block_idx.<l> for N/G layers. Weights are drawn larger
than the training init (std 0.3) so that attention is peaked and block selections are decisive; a seed
is accepted only if every selection decided by score has a relative margin > MIN_MARGIN, so that an fp32
implementation must select the same blocks.

Usage: gen_fixtures.py [--out tests/fixtures] [--only name ...] [--skip-checks]
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import asa_ref  # noqa: E402

B, T = 2, 37
MIN_MARGIN = 1e-3
MAX_TOTAL_BYTES = 2 * 1024 * 1024

COMMON = dict(model_type="asa", vocab_size=64, hidden_size=32, intermediate_size=64, num_heads=4,
              num_hidden_layers=2, max_position_embeddings=64, norm_eps=1e-6, rope_theta=10000.0,
              tie_word_embeddings=False)
GQA = dict(num_kv_heads=2, head_dim=8)
NSA = dict(GQA, layer_pattern="N", window_size=8, block_size=4, selection_block_size=8)
LATENT = dict(qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, kv_lora_rank=16, latent_groups=2,
              latent_dim=8, window_size=8, block_size=4, selection_block_size=8)

FIXTURES = {
    "f": dict(GQA, layer_pattern="F", tie_word_embeddings=True),
    "n_r1": dict(NSA, block_counts=4, selection_share=1),
    "n_r4": dict(NSA, block_counts=4, selection_share=4),
    "gl_r1": dict(LATENT, layer_pattern="GL", block_counts=4, selection_share=1),
    "gl_r4": dict(LATENT, layer_pattern="GL", block_counts=4, selection_share=4),
    "lg_r1": dict(LATENT, layer_pattern="LG", block_counts=4, selection_share=1),
    "lg_r4": dict(LATENT, layer_pattern="LG", block_counts=4, selection_share=4),
    "n_bs4": dict(GQA, layer_pattern="N", window_size=8, block_size=4, selection_block_size=4,
                  block_counts=4, selection_share=2),
}


def make_inputs(cfg, seed):
    """Weights rounded to fp32 (so the stored F32 weights are exactly what was computed with), tokens and
    targets (next token; the last position of each sequence and two other positions ignored)."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in asa_ref.param_shapes(cfg):
        if name.endswith("norm.weight"):
            w = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            w = 0.3 * rng.standard_normal(shape)
        weights[name] = w.astype(np.float32).astype(np.float64)
    tokens = rng.integers(0, cfg.vocab_size, size=(B, T), dtype=np.int64)
    targets = asa_ref.default_targets(tokens)
    flat = rng.choice(B * (T - 1), size=2, replace=False)
    for f in flat:
        targets[f // (T - 1), f % (T - 1)] = -1
    return weights, tokens, targets


def min_margin(out):
    ms = [m for l in out["margins"] for m in out["margins"][l]]
    return min(ms) if ms else math.inf


def build_fixture(name, cfg_dict, out_dir, base_seed):
    cfg = asa_ref.Config(cfg_dict)
    for attempt in range(100):
        seed = base_seed + attempt
        weights, tokens, targets = make_inputs(cfg, seed)
        out = asa_ref.run(cfg, weights, tokens, targets)
        margin = min_margin(out)
        if margin > MIN_MARGIN:
            break
    else:
        raise RuntimeError(f"{name}: no seed with selection margins > {MIN_MARGIN}")
    tensors = {n: ("F32", weights[n]) for n, _ in asa_ref.param_shapes(cfg)}
    tensors["tokens"] = ("I32", tokens)
    tensors["targets"] = ("I32", targets)
    tensors.update(asa_ref.result_tensors(cfg, out, "F32"))
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg_dict, f, indent=2)
        f.write("\n")
    path = os.path.join(d, "fixture.safetensors")
    asa_ref.save_safetensors(path, tensors)
    n_choices = sum(len(v) for v in out["margins"].values())
    mtxt = f"{margin:.3e} over {n_choices} scored choices" if n_choices else "n/a (every selection forced)"
    print(f"{name:6s} pattern {cfg.layer_pattern:2s} seed {seed}  loss {out['loss'].item():.6f}  "
          f"min selection margin {mtxt}  {os.path.getsize(path)} bytes")
    return cfg, weights, tokens, targets


# ---------------------------------------------------------------------------------------------------
# self-check 1: autograd against central finite differences, in float64

def check_gradients(name, cfg, weights, tokens, targets, probes):
    """probes: list of (param name, number of entries). Selections must not change under the step."""
    rng = np.random.default_rng(7)
    out = asa_ref.run(cfg, weights, tokens, targets)
    tk, tg = torch.as_tensor(tokens), torch.as_tensor(targets)
    P0 = {n: torch.as_tensor(weights[n]) for n, _ in asa_ref.param_shapes(cfg)}
    eps = 1e-6
    worst = 0.0
    for pname, count in probes:
        g = out["grads"][pname].reshape(-1)
        picks = rng.choice(g.numel(), size=min(count, g.numel()), replace=False)
        for e in picks:
            vals = []
            for sgn in (1.0, -1.0):
                P = dict(P0)
                w = P0[pname].clone().reshape(-1)
                w[e] += sgn * eps
                P[pname] = w.reshape(P0[pname].shape)
                with torch.no_grad():
                    o = asa_ref.forward(cfg, P, tk, tg)
                for l in o["idx"]:
                    assert torch.equal(o["idx"][l], out["idx"][l]), f"{name}: selection moved under FD step"
                vals.append(o["loss"].item())
            fd = (vals[0] - vals[1]) / (2 * eps)
            # central-difference truncation ~eps^2 and cancellation ~1e-16*|loss|/eps ~ 1e-9
            err = abs(fd - g[e].item())
            worst = max(worst, err / (1e-6 + abs(g[e].item())))
            if err > 1e-7 + 1e-6 * abs(g[e].item()):
                raise AssertionError(f"{name}: grad {pname}[{e}] autograd {g[e].item():.10e} vs FD {fd:.10e}")
    print(f"check  grad-vs-FD on {name}: {sum(c for _, c in probes)} entries, worst scaled error {worst:.2e}")


# ---------------------------------------------------------------------------------------------------
# self-check 2: the sparse branches against a naive per-query implementation

def naive_nsa(q, k, v, b, bs, n, R, w, scale):
    """Per-query scalar loops over numpy float64 arrays; GQA k, v [B, T, g, d] (not repeated per head).
    Returns o_cmp, o_slc, o_win [B, T, h, d] and block lists {(batch, anchor row, group): set}."""
    Bq, Tq, h, d = q.shape
    g = k.shape[2]
    G = h // g
    o_cmp, o_slc, o_win = (np.zeros((Bq, Tq, h, v.shape[-1])) for _ in range(3))

    def softmax_out(qv, keys, vals):
        if not keys:
            return np.zeros(v.shape[-1]), []
        logits = [float(np.dot(qv, kk)) * scale for kk in keys]
        mx = max(logits)
        ex = [math.exp(x - mx) for x in logits]
        z = sum(ex)
        probs = [x / z for x in ex]
        return sum(p * vv for p, vv in zip(probs, vals)), probs

    lists = {}
    for bb in range(Bq):
        for j in range(g):
            # pooled keys/values of complete blocks
            nblk = Tq // b
            kb = [k[bb, m * b:(m + 1) * b, j].sum(0) / b for m in range(nblk)]
            vb = [v[bb, m * b:(m + 1) * b, j].sum(0) / b for m in range(nblk)]
            probs_at = {}
            for t in range(Tq):
                usable = [m for m in range(nblk) if m * b + b - 1 <= t]
                for i in range(j * G, (j + 1) * G):
                    o, pr = softmax_out(q[bb, t, i], [kb[m] for m in usable], [vb[m] for m in usable])
                    o_cmp[bb, t, i] = o
                    probs_at[(t, i)] = dict(zip(usable, pr))
            for t in range(0, Tq, R):
                c = t // bs
                score = {}
                for u in range(c + 1):
                    score[u] = sum(probs_at[(t, i)].get(m, 0.0) for i in range(j * G, (j + 1) * G)
                                   for m in range(u * bs // b, (u + 1) * bs // b))
                chosen = {u for u in (0, c - 1, c) if u >= 0}
                while len(chosen) < min(n, c + 1):
                    best = None
                    for u in range(c + 1):   # ascending scan with strict '>' keeps the lower index on ties
                        if u not in chosen and (best is None or score[u] > score[best]):
                            best = u
                    chosen.add(best)
                lists[(bb, t // R, j)] = chosen
            for t in range(Tq):
                chosen = lists[(bb, t // R, j)]
                sel = [s for s in range(t + 1) if s // bs in chosen]
                win = [s for s in range(t + 1) if s > t - w]
                for i in range(j * G, (j + 1) * G):
                    o_slc[bb, t, i] = softmax_out(q[bb, t, i], [k[bb, s, j] for s in sel],
                                                  [v[bb, s, j] for s in sel])[0]
                    o_win[bb, t, i] = softmax_out(q[bb, t, i], [k[bb, s, j] for s in win],
                                                  [v[bb, s, j] for s in win])[0]
    return o_cmp, o_slc, o_win, lists


def check_sparse_branches():
    rng = np.random.default_rng(11)
    cases = [  # (T, h, g, d, b, bs, n, R, w): the first is SPEC §4's R = 1, b_s = b case without window
        (53, 4, 2, 8, 4, 4, 5, 1, 0),
        (41, 4, 1, 6, 4, 4, 3, 1, 0),
        (53, 4, 2, 8, 4, 8, 4, 2, 5),
        (50, 6, 3, 4, 2, 8, 6, 4, 7),
    ]
    for (Tq, h, g, d, b, bs, n, R, w) in cases:
        q = rng.standard_normal((2, Tq, h, d)) * 1.5
        k = rng.standard_normal((2, Tq, g, d)) * 1.5
        v = rng.standard_normal((2, Tq, g, d))
        scale = 1.0 / math.sqrt(d)
        nc, ns, nw, lists = naive_nsa(q, k, v, b, bs, n, R, w, scale)
        G = h // g
        qt, kt, vt = (torch.as_tensor(x) for x in (q, k, v))
        kh, vh = kt.repeat_interleave(G, dim=2), vt.repeat_interleave(G, dim=2)
        oc, os_, idx, _ = asa_ref.sparse_branches(qt, kh, vh, g, b, bs, n, R, scale)
        ow = asa_ref.masked_attention(qt, kh, vh, asa_ref.causal_mask(Tq, w), scale) if w > 0 else None
        errs = [np.abs(oc.numpy() - nc).max(), np.abs(os_.numpy() - ns).max()]
        if ow is not None:
            errs.append(np.abs(ow.numpy() - nw).max())
        mism = 0
        for (bb, ai, j), chosen in lists.items():
            got = {int(u) for u in idx[bb, ai, j] if u >= 0}
            mism += got != chosen
        assert max(errs) < 1e-12 and mism == 0, f"sparse branches vs naive: errors {errs}, set mismatches {mism}"
        print(f"check  sparse branches vs naive (T {Tq} h {h} g {g} b {b} b_s {bs} n {n} R {R} w {w}): "
              f"max abs diff {max(errs):.1e}, {len(lists)} block sets identical")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.normpath(os.path.join(here, "..", "..", "tests", "fixtures")))
    ap.add_argument("--only", nargs="*", help="fixture names (default: all)")
    ap.add_argument("--skip-checks", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.time()
    if not args.skip_checks:
        check_sparse_branches()
    names = args.only or list(FIXTURES)
    built = {}
    for i, name in enumerate(FIXTURES):
        if name in names:
            built[name] = build_fixture(name, dict(COMMON, **FIXTURES[name]), args.out, 1000 * (i + 1))
    if not args.skip_checks:
        probes = {
            "gl_r4": [("model.layers.0.attn.kv_norm.weight", 16), ("model.layers.0.attn.q_proj.weight", 6),
                      ("model.layers.0.attn.kv_up.weight", 6), ("model.layers.1.attn.kv_down.weight", 4)],
            "n_bs4": [("model.layers.0.attn.g_proj.weight", 6), ("model.layers.0.attn.k_proj.weight", 6),
                      ("model.layers.1.attn.v_proj.weight", 4), ("model.norm.weight", 4)],
            "f": [("model.embeddings.weight", 6), ("model.layers.1.attn_norm.weight", 4)],
        }
        for name, pr in probes.items():
            if name in built:
                check_gradients(name, *built[name], pr)
    total = 0
    for root, _, files in os.walk(args.out):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    print(f"total {total} bytes in {args.out} ({time.time() - t0:.1f} s)")
    if total >= MAX_TOTAL_BYTES:
        sys.exit(f"fixtures total {total} bytes, over the {MAX_TOTAL_BYTES} byte budget")


if __name__ == "__main__":
    main()
