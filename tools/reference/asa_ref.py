#!/usr/bin/env python3
"""Independent float64 PyTorch reference of the whole model, written from shared/SPEC.md sections 1-4 alone.

It favours being obviously equal to the SPEC over speed: every attention is a softmax with an explicit
[T, T] (or [T, blocks]) mask, block selection is a per-anchor Python loop with a visible stable sort, and
latent layers use the non-absorbed form (per-head keys and values materialised from kv_up). Nothing here
mirrors how the C code computes things; it is the oracle the C code is tested against.

CLI:  asa_ref.py --config config.json --weights W.safetensors --tokens T.safetensors --out O.safetensors
writes logits, loss, grad.<param>, hidden.<l> and block_idx.<l> (F32 unless --f64).
Only torch APIs present in both torch 1.13 and 2.x are used; numpy is the only other dependency.
"""
import argparse
import json
import math
import struct
import sys

import numpy as np
import torch

DT = torch.float64

# ---------------------------------------------------------------------------------------------------
# safetensors: 8-byte little-endian header length, JSON header, raw little-endian data

_NP_OF = {"F64": "<f8", "F32": "<f4", "I64": "<i8", "I32": "<i4", "U8": "u1"}


def save_safetensors(path, tensors):
    """tensors: dict name -> (dtype string, numpy-convertible array); written in insertion order."""
    header, blobs, off = {}, [], 0
    for name, (dtype, arr) in tensors.items():
        a = np.ascontiguousarray(np.asarray(arr), dtype=_NP_OF[dtype])
        raw = a.tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for raw in blobs:
            f.write(raw)


def load_safetensors(path):
    """Returns dict name -> numpy array (BF16 widened to float32)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        raw = data[base + lo:base + hi]
        if info["dtype"] == "BF16":
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] in _NP_OF:
            a = np.frombuffer(raw, dtype=_NP_OF[info["dtype"]])
        else:
            raise ValueError(f"{path}: tensor '{name}': unsupported dtype {info['dtype']}")
        out[name] = a.reshape(info["shape"]).copy()
    return out


# ---------------------------------------------------------------------------------------------------
# config

class Config:
    """The config.json keys of SPEC §1-4 with their documented defaults."""

    def __init__(self, d):
        def need(key):
            if key not in d:
                raise ValueError(f"config: key '{key}' is required")
            return d[key]

        self.vocab_size = int(need("vocab_size"))
        self.hidden_size = int(need("hidden_size"))
        D = self.hidden_size
        self.intermediate_size = int(d.get("intermediate_size", 256 * math.ceil(8 / 3 * D / 256)))
        self.num_hidden_layers = int(need("num_hidden_layers"))
        self.num_heads = int(need("num_heads"))
        self.num_kv_heads = int(d.get("num_kv_heads", self.num_heads))
        self.head_dim = int(d.get("head_dim", D // self.num_heads))
        self.qk_nope_head_dim = int(d.get("qk_nope_head_dim", 0))
        self.qk_rope_head_dim = int(d.get("qk_rope_head_dim", 0))
        self.v_head_dim = int(d.get("v_head_dim", 0))
        self.kv_lora_rank = int(d.get("kv_lora_rank", 0))
        self.latent_groups = int(d.get("latent_groups", 1))
        self.latent_dim = int(d.get("latent_dim", 0))
        self.window_size = int(d.get("window_size", 0))
        self.block_size = int(d.get("block_size", 0))
        self.selection_block_size = int(d.get("selection_block_size", self.block_size))
        self.block_counts = int(d.get("block_counts", 0))
        self.layer_pattern = str(need("layer_pattern"))
        self.selection_share = int(d.get("selection_share", 4 if "G" in self.layer_pattern else 1))
        self.norm_eps = float(d.get("norm_eps", 1e-6))
        self.rope_theta = float(d.get("rope_theta", 10000.0))
        self.tie_word_embeddings = bool(d.get("tie_word_embeddings", False))
        if d.get("compress", "mean") != "mean":
            raise ValueError("config: key 'compress': only \"mean\" is implemented")
        reps = -(-self.num_hidden_layers // len(self.layer_pattern))
        self.kinds = (self.layer_pattern * reps)[:self.num_hidden_layers]
        self._validate()

    def _validate(self):
        h = self.num_heads
        for k in self.kinds:
            if k not in "FWNLG":
                raise ValueError(f"config: key 'layer_pattern': unknown letter '{k}'")
        if set(self.kinds) & set("FWN"):
            if h % self.num_kv_heads or self.head_dim % 2:
                raise ValueError("config: num_heads % num_kv_heads and head_dim % 2 must be 0")
        if set(self.kinds) & set("LG"):
            if self.qk_rope_head_dim % 2 or self.qk_rope_head_dim <= 0:
                raise ValueError("config: key 'qk_rope_head_dim': must be even and > 0")
        if "G" in self.kinds and h % self.latent_groups:
            raise ValueError("config: key 'latent_groups': must divide num_heads")
        if set(self.kinds) & set("WL") and self.window_size <= 0:
            raise ValueError("config: key 'window_size': must be > 0 for W and L layers")
        if set(self.kinds) & set("NG"):
            b, bs, R = self.block_size, self.selection_block_size, self.selection_share
            if b <= 0 or bs % b or R <= 0 or bs % R or self.block_counts < 3:
                raise ValueError("config: need block_size > 0, selection_block_size % block_size == 0, "
                                 "selection_block_size % selection_share == 0, block_counts >= 3")


def load_config(path):
    with open(path) as f:
        return Config(json.load(f))


# ---------------------------------------------------------------------------------------------------
# parameters: names and shapes of SPEC §1-3, in checkpoint order

def param_shapes(cfg):
    D, I, V, h = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_heads
    out = [("model.embeddings.weight", (V, D))]
    for l, kind in enumerate(cfg.kinds):
        p = f"model.layers.{l}."
        out.append((p + "attn_norm.weight", (D,)))
        if kind in "FWN":
            g, d = cfg.num_kv_heads, cfg.head_dim
            out += [(p + "attn.q_proj.weight", (h * d, D)), (p + "attn.k_proj.weight", (g * d, D)),
                    (p + "attn.v_proj.weight", (g * d, D))]
            if kind == "N":
                out.append((p + "attn.g_proj.weight", (3 * h, D)))
            out.append((p + "attn.o_proj.weight", (D, h * d)))
        else:
            dn, dr, dv = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
            lat = cfg.kv_lora_rank if kind == "L" else cfg.latent_groups * cfg.latent_dim
            up_in = cfg.kv_lora_rank if kind == "L" else cfg.latent_dim
            out += [(p + "attn.q_proj.weight", (h * (dn + dr), D)), (p + "attn.kv_down.weight", (lat, D)),
                    (p + "attn.kv_norm.weight", (lat,)), (p + "attn.k_rope.weight", (dr, D)),
                    (p + "attn.kv_up.weight", (h * (dn + dv), up_in))]
            if kind == "G":
                out.append((p + "attn.g_proj.weight", (2 * h, D)))
            out.append((p + "attn.o_proj.weight", (D, h * dv)))
        out += [(p + "mlp_norm.weight", (D,)), (p + "mlp.gate_proj.weight", (I, D)),
                (p + "mlp.up_proj.weight", (I, D)), (p + "mlp.down_proj.weight", (D, I))]
    out.append(("model.norm.weight", (D,)))
    if not cfg.tie_word_embeddings:
        out.append(("lm_head.weight", (V, D)))
    return out


# ---------------------------------------------------------------------------------------------------
# building blocks

def rms_norm(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope(u, theta):
    """GPT-NeoX rotate-half RoPE on u [B, T, H, r]; position = index along T."""
    T, r = u.shape[1], u.shape[-1]
    half = r // 2
    f = torch.tensor(theta, dtype=DT) ** (-2.0 * torch.arange(half, dtype=DT) / r)
    a = torch.arange(T, dtype=DT)[:, None] * f[None, :]            # [T, r/2]
    cos, sin = torch.cos(a)[None, :, None, :], torch.sin(a)[None, :, None, :]
    u1, u2 = u[..., :half], u[..., half:]
    return torch.cat([u1 * cos - u2 * sin, u2 * cos + u1 * sin], dim=-1)


def masked_attention(q, k, v, mask, scale):
    """q, k [B, T, h, dk], v [B, T, h, dv] (one key/value stream per query head); mask broadcastable to
    [B, h, T, T], True where query t may read key s. Every row must have a visible key."""
    assert bool(mask.any(-1).all()), "a query row with no visible key"
    logits = torch.einsum("bthd,bshd->bhts", q, k) * scale
    p = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.einsum("bhts,bshd->bthd", p, v)


def causal_mask(T, window=0):
    """[T, T] bool: s <= t, and t - window < s when window > 0."""
    t = torch.arange(T)[:, None]
    s = torch.arange(T)[None, :]
    m = s <= t
    if window > 0:
        m = m & (s > t - window)
    return m


def select_blocks(score, c, n):
    """SPEC §4 selection for one anchor and group. score: sequence over selection blocks 0..c (at least);
    c: the anchor's current block. Returns (sorted block list, margin) where margin is the relative gap
    between the last block chosen by score and the best one left out (None when no choice was made)."""
    forced = sorted({u for u in (0, c - 1, c) if 0 <= u <= c})
    candidates = [u for u in range(c + 1) if u not in forced]       # ascending block index
    # Python's sort is stable: among equal scores the lower block index stays first.
    ranked = sorted(candidates, key=lambda u: -float(score[u]))
    free = max(0, n - len(forced))
    chosen = sorted(forced + ranked[:free])
    margin = None
    if 0 < free < len(ranked):
        last, best_out = float(score[ranked[free - 1]]), float(score[ranked[free]])
        margin = (last - best_out) / last if last > 0 else 0.0
    return chosen, margin


def sparse_branches(q, k, v, n_groups, b, bs, n, R, scale):
    """SPEC §4 compression and selection branches.
    q, k [B, T, h, dk], v [B, T, h, dv]: per query head (a GQA KV head is repeated over its G heads; a
    latent group's heads each have their own keys/values). Head i belongs to group i // (h / n_groups).
    Returns o_cmp, o_slc [B, T, h, dv], idx [B, ceil(T/R), n_groups, n] (long, -1 padded) and the list
    of selection margins."""
    B, T, h, dk = q.shape
    G = h // n_groups

    # Compression: mean of the (post-RoPE) keys/values of each complete block.
    M = T // b
    kbar = k[:, :M * b].reshape(B, M, b, h, dk).mean(dim=2)          # [B, M, h, dk]
    vbar = v[:, :M * b].reshape(B, M, b, h, v.shape[-1]).mean(dim=2)
    t = torch.arange(T)
    vis = (torch.arange(M)[None, :] + 1) * b - 1 <= t[:, None]        # [T, M]: block complete at t
    any_vis = vis.any(dim=-1)                                        # [T]
    logits = torch.einsum("bthd,bmhd->bhtm", q, kbar) * scale
    # Rows with no visible block: softmax over zeros, then the mask zeroes them (output 0, no NaN grads).
    logits = logits.masked_fill(~vis, float("-inf")).masked_fill(~any_vis[:, None], 0.0)
    p = torch.softmax(logits, dim=-1) * vis.to(DT)                  # [B, h, T, M]
    o_cmp = torch.einsum("bhtm,bmhd->bthd", p, vbar)

    # Scores and selection: no gradient.
    U = -(-T // bs)
    nA = -(-T // R)
    idx = torch.full((B, nA, n_groups, n), -1, dtype=torch.long)
    margins = []
    with torch.no_grad():
        member = (torch.arange(M)[:, None] // (bs // b) == torch.arange(U)[None, :]).to(DT)  # [M, U]
        score_h = torch.einsum("bhtm,mu->bhtu", p.detach(), member)
        score = score_h.reshape(B, n_groups, G, T, U).sum(dim=2)     # [B, g, T, U]
        for bb in range(B):
            for ai in range(nA):
                a = ai * R
                for j in range(n_groups):
                    chosen, margin = select_blocks(score[bb, j, a], a // bs, n)
                    idx[bb, ai, j, :len(chosen)] = torch.tensor(chosen, dtype=torch.long)
                    if margin is not None:
                        margins.append(margin)

        # Token mask of the selection branch: key s is in a block listed for t's anchor, and s <= t.
        onehot = torch.zeros(B, nA, n_groups, U + 1, dtype=torch.bool)  # slot U absorbs the -1 padding
        onehot.scatter_(3, torch.where(idx >= 0, idx, torch.full_like(idx, U)), True)
        onehot = onehot[..., :U]
        anchor_row = t // R                                          # [T]
        key_block = t // bs                                          # [T]
        sel = onehot[:, anchor_row][:, :, :, key_block]              # [B, T(query), g, T(key)]
        sel = sel.permute(0, 2, 1, 3) & causal_mask(T)[None, None]  # [B, g, T, T]
        sel_h = sel.repeat_interleave(G, dim=1)                      # [B, h, T, T]
    o_slc = masked_attention(q, k, v, sel_h, scale)
    return o_cmp, o_slc, idx, margins


# ---------------------------------------------------------------------------------------------------
# layers

def gqa_attention(x, P, p, cfg, kind, rec):
    """SPEC §2: F, W, N layers. x: the normalised layer input [B, T, D]."""
    B, T, _ = x.shape
    h, g, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    G = h // g
    q = rope((x @ P[p + "q_proj.weight"].T).reshape(B, T, h, d), cfg.rope_theta)
    k = rope((x @ P[p + "k_proj.weight"].T).reshape(B, T, g, d), cfg.rope_theta)
    v = (x @ P[p + "v_proj.weight"].T).reshape(B, T, g, d)
    kh, vh = k.repeat_interleave(G, dim=2), v.repeat_interleave(G, dim=2)  # head i reads KV head i // G
    scale = 1.0 / math.sqrt(d)
    if kind == "F":
        o = masked_attention(q, kh, vh, causal_mask(T), scale)
    elif kind == "W":
        o = masked_attention(q, kh, vh, causal_mask(T, cfg.window_size), scale)
    else:
        gate = torch.sigmoid(x @ P[p + "g_proj.weight"].T).reshape(B, T, h, 3)
        o_cmp, o_slc, idx, margins = sparse_branches(
            q, kh, vh, g, cfg.block_size, cfg.selection_block_size, cfg.block_counts,
            cfg.selection_share, scale)
        if cfg.window_size > 0:
            o_win = masked_attention(q, kh, vh, causal_mask(T, cfg.window_size), scale)
        else:
            o_win = torch.zeros_like(o_cmp)
        o = gate[..., 0:1] * o_cmp + gate[..., 1:2] * o_slc + gate[..., 2:3] * o_win
        rec["idx"], rec["margins"] = idx, margins
    return o.reshape(B, T, h * d) @ P[p + "o_proj.weight"].T


def latent_attention(x, P, p, cfg, kind, rec):
    """SPEC §3: L (MLA, window) and G (grouped latents, compression + selection), non-absorbed form."""
    B, T, _ = x.shape
    h, dn, dr, dv = cfg.num_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
    q = (x @ P[p + "q_proj.weight"].T).reshape(B, T, h, dn + dr)
    q = torch.cat([q[..., :dn], rope(q[..., dn:], cfg.rope_theta)], dim=-1)
    kr = rope((x @ P[p + "k_rope.weight"].T).reshape(B, T, 1, dr), cfg.rope_theta)
    lat = x @ P[p + "kv_down.weight"].T
    w_up = P[p + "kv_up.weight"]
    if kind == "L":
        c = rms_norm(lat, P[p + "kv_norm.weight"], cfg.norm_eps)     # [B, T, d_c]
        kv = (c @ w_up.T).reshape(B, T, h, dn + dv)
    else:
        ng, dcg = cfg.latent_groups, cfg.latent_dim
        G = h // ng
        # each group normalised over its own slice, with its own slice of the weight
        c = rms_norm(lat.reshape(B, T, ng, dcg), P[p + "kv_norm.weight"].reshape(ng, dcg), cfg.norm_eps)
        c_head = c.repeat_interleave(G, dim=2)                      # head i reads group i // G
        kv = torch.einsum("bthc,hec->bthe", c_head, w_up.reshape(h, dn + dv, dcg))
    k = torch.cat([kv[..., :dn], kr.expand(B, T, h, dr)], dim=-1)   # k_i = [kn_i ; kr]
    v = kv[..., dn:]
    scale = 1.0 / math.sqrt(dn + dr)
    if kind == "L":
        o = masked_attention(q, k, v, causal_mask(T, cfg.window_size), scale)
    else:
        gate = torch.sigmoid(x @ P[p + "g_proj.weight"].T).reshape(B, T, h, 2)
        o_cmp, o_slc, idx, margins = sparse_branches(
            q, k, v, cfg.latent_groups, cfg.block_size, cfg.selection_block_size, cfg.block_counts,
            cfg.selection_share, scale)
        o = gate[..., 0:1] * o_cmp + gate[..., 1:2] * o_slc
        rec["idx"], rec["margins"] = idx, margins
    return o.reshape(B, T, h * dv) @ P[p + "o_proj.weight"].T


def swiglu(x, P, p):
    gate = x @ P[p + "gate_proj.weight"].T
    return (torch.nn.functional.silu(gate) * (x @ P[p + "up_proj.weight"].T)) @ P[p + "down_proj.weight"].T


def forward(cfg, P, tokens, targets=None):
    """P: dict name -> float64 tensor; tokens, targets: long [B, T] (targets < 0 ignored).
    Returns dict with logits [B, T, V], loss (scalar or None), hidden (list of [B, T, D] after each
    layer) and, per N/G layer l, idx[l] and margins[l]."""
    x = P["model.embeddings.weight"][tokens]
    hidden, idx, margins = [], {}, {}
    for l, kind in enumerate(cfg.kinds):
        p = f"model.layers.{l}."
        a = rms_norm(x, P[p + "attn_norm.weight"], cfg.norm_eps)
        rec = {}
        if kind in "FWN":
            x = x + gqa_attention(a, P, p + "attn.", cfg, kind, rec)
        else:
            x = x + latent_attention(a, P, p + "attn.", cfg, kind, rec)
        x = x + swiglu(rms_norm(x, P[p + "mlp_norm.weight"], cfg.norm_eps), P, p + "mlp.")
        hidden.append(x)
        if "idx" in rec:
            idx[l], margins[l] = rec["idx"], rec["margins"]
    head = P["model.embeddings.weight"] if cfg.tie_word_embeddings else P["lm_head.weight"]
    logits = rms_norm(x, P["model.norm.weight"], cfg.norm_eps) @ head.T
    loss = None
    if targets is not None:
        keep = targets >= 0
        logp = torch.log_softmax(logits, dim=-1)
        picked = logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        loss = -(picked * keep.to(DT)).sum() / keep.sum()
    return {"logits": logits, "loss": loss, "hidden": hidden, "idx": idx, "margins": margins}


def run(cfg, weights, tokens, targets):
    """weights: dict name -> array (any float dtype); returns forward()'s dict plus grads (name -> tensor)."""
    P = {}
    for name, shape in param_shapes(cfg):
        if name not in weights:
            raise ValueError(f"weights: tensor '{name}' is missing")
        t = torch.as_tensor(np.asarray(weights[name]), dtype=DT)
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"weights: tensor '{name}': shape {tuple(t.shape)}, expected {tuple(shape)}")
        P[name] = t.clone().requires_grad_(True)
    out = forward(cfg, P, torch.as_tensor(tokens, dtype=torch.long), torch.as_tensor(targets, dtype=torch.long))
    out["loss"].backward()
    out["grads"] = {name: P[name].grad for name, _ in param_shapes(cfg)}
    return out


def result_tensors(cfg, out, fdt="F32"):
    """The output tensors of the CLI / fixtures, by name (block lists I32, everything else fdt)."""
    res = {"logits": (fdt, out["logits"].detach().numpy()),
           "loss": (fdt, out["loss"].detach().reshape(1).numpy())}
    for name, _ in param_shapes(cfg):
        res["grad." + name] = (fdt, out["grads"][name].numpy())
    for l, hdn in enumerate(out["hidden"]):
        res[f"hidden.{l}"] = (fdt, hdn.detach().numpy())
    for l, idx in out["idx"].items():
        res[f"block_idx.{l}"] = ("I32", idx.numpy())
    return res


def default_targets(tokens):
    """Next token; the last position of each sequence is ignored (-1)."""
    tg = np.full_like(tokens, -1)
    tg[:, :-1] = tokens[:, 1:]
    return tg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--weights", required=True, help="safetensors with every parameter (SPEC names)")
    ap.add_argument("--tokens", required=True, help="safetensors with 'tokens' [B, T] and optional 'targets'")
    ap.add_argument("--out", required=True)
    ap.add_argument("--f64", action="store_true", help="store float outputs as F64 instead of F32")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    weights = load_safetensors(args.weights)
    tk = load_safetensors(args.tokens)
    if "tokens" not in tk:
        sys.exit(f"{args.tokens}: tensor 'tokens' is missing")
    tokens = tk["tokens"].astype(np.int64)
    if tokens.ndim != 2 or tokens.min() < 0 or tokens.max() >= cfg.vocab_size:
        sys.exit(f"{args.tokens}: 'tokens' must be [B, T] with values in [0, {cfg.vocab_size})")
    targets = tk["targets"].astype(np.int64) if "targets" in tk else default_targets(tokens)
    out = run(cfg, weights, tokens, targets)
    save_safetensors(args.out, result_tensors(cfg, out, "F64" if args.f64 else "F32"))
    print(f"loss {out['loss'].item():.10f}  logits {tuple(out['logits'].shape)}  -> {args.out}")


if __name__ == "__main__":
    main()
