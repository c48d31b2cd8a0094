#!/usr/bin/env python3
"""Peer timings for issue 6: PyTorch SDPA full causal attention and fla's Triton NSA, bf16, forward and
backward, at the issue's Setting A, on one GPU, to compare with `asa bench attn` run in the same call.

SDPA: torch.nn.functional.scaled_dot_product_attention(is_causal=True, enable_gqa=True), q [B, h, T, d],
k and v [B, g, T, d]. fla: fla.ops.nsa.parallel_nsa (compressed and selected branches, gated) plus its
window branch through fla's own Triton parallel_attn(window_size=w) (parallel_nsa runs the window
through flash_attn, which is not installed on the device machine), gated and summed; fla is imported
from a copy outside the repository (--fla DIR holding fla/, e.g. .fla-full; see tools/bench/README.md).

Times are medians of triton.testing.do_bench (CUDA events; warm-up and repeats in ms; gradients reset
between calls), else of CUDA events around repeated calls. Backward is timed alone: the graph of one forward is kept
(retain_graph) and only .backward(dout) is repeated. FLOPs are counted as `asa bench attn` counts
them (the keys each query reads: 2(dk+dv) per query, head and key forward, 2(3dk+2dv) backward, plus
the selection scores for NSA), so TFLOP/s compare across the three.

Usage: python3 tools/bench/peer_attn.py [--seq 8192,16384,32768,65536] [--fla .fla-full] [--no-fla]
"""
import argparse
import os
import sys
import time
import traceback
import types


def keys_per_query(T, kind, b, bs, n, w):
    """Sum over queries t < T of the keys each branch reads (asa bench attn's count), and the selection
    scores' visible compressed blocks summed over the anchors (R = 1)."""
    keys = scores = 0
    for t in range(T):
        if kind == 'F':
            keys += t + 1
            continue
        cmp = (t + 1) // b
        c = t // bs
        slc = (min(n, c + 1) - 1) * bs + t % bs + 1
        keys += cmp + slc + min(t + 1, w)
        scores += cmp
    return keys, scores


def flops(T, B, h, g, d, kind, b, bs, n, w):
    keys, scores = keys_per_query(T, kind, b, bs, n, w)
    fwd = B * h * (keys * 4.0 * d + scores * 2.0 * d)
    bwd = B * h * keys * 10.0 * d
    if kind == 'N':  # pooling and the three gates, as asa counts them
        N = B * T
        fwd += N * (g * 2 * d + h * d * 6)
        bwd += N * (g * 2 * d + h * d * 12)
    return fwd, bwd


def make_timer(torch):
    try:
        from triton.testing import do_bench

        def timer(fn, grads=None):
            ms = do_bench(fn, warmup=25, rep=100, grad_to_none=grads, return_mode='median')
            return ms, 'triton.testing.do_bench median'
        return timer
    except Exception:  # no Triton: CUDA events, median of 10 after 3 warm-ups
        def timer(fn, grads=None):
            for _ in range(3):
                fn()
            ts = []
            for _ in range(10):
                for x in grads or ():
                    x.grad = None
                a, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                e.record()
                e.synchronize()
                ts.append(a.elapsed_time(e))
            ts.sort()
            return ts[len(ts) // 2], 'CUDA-event median of 10'
        return timer


def ceilings(torch, timer):
    n = 8192
    a = torch.randn(n, n, device='cuda', dtype=torch.bfloat16)
    bm = torch.randn(n, n, device='cuda', dtype=torch.bfloat16)
    ms, _ = timer(lambda: a @ bm)
    tflops = 2 * n ** 3 / (ms * 1e-3) / 1e12
    del a, bm
    x = torch.randn(1 << 28, device='cuda')  # 1 GiB of fp32
    y = torch.empty_like(x)
    ms, _ = timer(lambda: y.copy_(x))
    gbs = 2 * x.numel() * 4 / (ms * 1e-3) / 1e9
    del x, y
    return tflops, gbs


def import_fla(path):
    """fla.ops.nsa and fla.ops.attn from a source copy, without running fla/__init__.py (which imports
    fla.layers and fla.models and, through them, transformers): the packages fla and fla.ops are
    registered as bare namespaces over the copy's folders."""
    root = os.path.abspath(path)
    if not os.path.isdir(os.path.join(root, 'fla', 'ops', 'nsa')):
        raise RuntimeError(f'{root}: no fla/ops/nsa (extract fla v0.5.2 there: tools/bench/README.md)')
    version = '?'
    with open(os.path.join(root, 'fla', '__init__.py')) as f:
        for line in f:
            if line.startswith('__version__'):
                version = line.split('=')[1].strip().strip('"\'')
    sys.path.insert(0, root)
    for name, sub in (('fla', 'fla'), ('fla.ops', os.path.join('fla', 'ops'))):
        m = types.ModuleType(name)
        m.__path__ = [os.path.join(root, sub)]
        m.__version__ = version  # fla.utils reads it
        sys.modules[name] = m
    from fla.ops.attn.parallel import parallel_attn
    from fla.ops.nsa.parallel import parallel_nsa
    return parallel_nsa, parallel_attn, version


def time_fwd_bwd(torch, timer, fwd, inputs, dout):
    with torch.no_grad():
        f_ms, how = timer(fwd)
    o = fwd()
    b_ms, _ = timer(lambda: o.backward(dout, retain_graph=True), list(inputs))
    for x in inputs:
        x.grad = None
    del o
    return f_ms, b_ms, how


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--seq', default='8192,16384,32768,65536')
    ap.add_argument('--batch', type=int, default=1)
    ap.add_argument('--heads', type=int, default=64)
    ap.add_argument('--kv-heads', type=int, default=4)
    ap.add_argument('--head-dim', type=int, default=128)
    ap.add_argument('--block-size', type=int, default=64)
    ap.add_argument('--block-counts', type=int, default=16)
    ap.add_argument('--window', type=int, default=512)
    ap.add_argument('--fla', default='.fla-full', help='folder holding a copy of fla/ (v0.5.2)')
    ap.add_argument('--no-fla', action='store_true')
    ap.add_argument('--no-sdpa', action='store_true')
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    if not torch.cuda.is_available():
        sys.exit('peer_attn: no CUDA device')
    torch.manual_seed(0)
    timer = make_timer(torch)
    B, h, g, d = args.batch, args.heads, args.kv_heads, args.head_dim
    b, n, w = args.block_size, args.block_counts, args.window
    seqs = [int(s) for s in args.seq.split(',')]

    nsa = attn = None
    fla_note = 'not run (--no-fla)'
    if not args.no_fla:
        try:
            nsa, attn, ver = import_fla(args.fla)
            fla_note = f'fla {ver} from {args.fla}'
        except Exception as e:  # keep the SDPA half
            traceback.print_exc()
            fla_note = f'not run: {type(e).__name__}: {e}'
    try:
        import triton
        tver = triton.__version__
    except Exception:
        tver = 'none'
    p = torch.cuda.get_device_properties(0)
    print(f'peer_attn: {p.name}, {p.multi_processor_count} SMs, torch {torch.__version__}, triton {tver}; {fla_note}')
    print(f'  setting: B {B}, h {h}, g {g}, d {d}, block {b}, {n} blocks, window {w}, bf16')
    tflops, gbs = ceilings(torch, timer)
    print(f'  ceilings: bf16 matmul 8192^3 {tflops:.0f} TFLOP/s, device copy {gbs:.0f} GB/s (read + write)',
          flush=True)

    rows = []
    for T in seqs:
        row = {'T': T}
        scale = d ** -0.5
        if not args.no_sdpa:
            try:
                q = torch.randn(B, h, T, d, device='cuda', dtype=torch.bfloat16, requires_grad=True)
                k = torch.randn(B, g, T, d, device='cuda', dtype=torch.bfloat16, requires_grad=True)
                v = torch.randn(B, g, T, d, device='cuda', dtype=torch.bfloat16, requires_grad=True)
                do = torch.randn(B, h, T, d, device='cuda', dtype=torch.bfloat16)

                def sdpa():
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True, scale=scale)
                row['sdpa'] = time_fwd_bwd(torch, timer, sdpa, (q, k, v), do)[:2]
                row['sdpa_flops'] = flops(T, B, h, g, d, 'F', b, b, n, w)
                del q, k, v, do
            except Exception as e:
                row['sdpa_err'] = f'{type(e).__name__}: {e}'
        if nsa is not None:
            try:
                q = torch.randn(B, T, h, d, device='cuda', dtype=torch.bfloat16, requires_grad=True)
                k = torch.randn(B, T, g, d, device='cuda', dtype=torch.bfloat16, requires_grad=True)
                v = torch.randn(B, T, g, d, device='cuda', dtype=torch.bfloat16, requires_grad=True)
                gates = torch.rand(3, B, T, h, device='cuda', dtype=torch.bfloat16)
                do = torch.randn(B, T, h, d, device='cuda', dtype=torch.bfloat16)

                def fla_nsa():
                    o = nsa(q, k, v, g_cmp=gates[0], g_slc=gates[1], block_counts=n, block_size=b, window_size=0,
                            scale=scale)
                    return o + attn(q, k, v, scale=scale, window_size=w) * gates[2].unsqueeze(-1)
                t0 = time.time()
                fla_nsa()  # compiles and autotunes the Triton kernels outside the timings
                torch.cuda.synchronize()
                row['fla_compile_s'] = time.time() - t0
                row['fla'] = time_fwd_bwd(torch, timer, fla_nsa, (q, k, v), do)[:2]
                row['fla_flops'] = flops(T, B, h, g, d, 'N', b, b, n, w)
                del q, k, v, gates, do
            except Exception as e:
                traceback.print_exc()
                row['fla_err'] = f'{type(e).__name__}: {e}'
        torch.cuda.empty_cache()
        rows.append(row)
        print(f'  T {T}: ' + ', '.join(f'{key} {val}' for key, val in row.items() if key != 'T'), flush=True)

    def cell(row, key):
        if key in row:
            (fm, bm), (ff, bf) = row[key], row[key + '_flops']
            return f'{fm:8.2f} / {bm:8.2f}', f'{ff / fm / 1e9:6.0f} / {bf / bm / 1e9:6.0f}'
        return ('error' if key + '_err' in row else 'not run'), ''
    print(f'\n{"T":>6} | {"SDPA fwd / bwd ms":>19} | {"TFLOP/s":>15} | {"fla NSA fwd / bwd ms":>20} | {"TFLOP/s":>15}')
    for row in rows:
        s, st = cell(row, 'sdpa')
        f, ft = cell(row, 'fla')
        print(f'{row["T"]:>6} | {s:>19} | {st:>15} | {f:>20} | {ft:>15}')
    for row in rows:
        for key in ('sdpa_err', 'fla_err'):
            if key in row:
                print(f'T {row["T"]}: {key[:-4]} failed: {row[key]}')


if __name__ == '__main__':
    main()
