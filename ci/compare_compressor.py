#!/usr/bin/env python3
"""Our Rust compressor against a PyTorch one written the way Templar's is, on the same tensors.

The PyTorch side follows Templar v0.3.10's tplr/compress.py: the tensor rearranged into
chunks, the DCT as an einsum against the basis, torch.topk on magnitudes, quantisation with a
host-checked scale and a scatter_add lookup, decompression with scatter_reduce(mean,
include_self=False), and per-chunk normalised batch decompression for aggregation. Both sides
run the same work per iteration: compress every tensor, decode each upload (the error
feedback), then aggregate it with P peer uploads and take the sign.

It also checks that the two agree: per chunk, the top-k index sets, the codes, and the decoded
tensors. Run it through ci/compare-compressor, which builds the binary first.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import load_file, save_file

PRESETS = {  # vocab, d_model, layers, heads, kv_heads, ffn (WORKLOAD.md)
    "tiny": (1024, 128, 2, 4, 2, 384),
    "small": (8192, 512, 8, 8, 4, 1408),
    "150m": (32000, 1024, 12, 16, 16, 2816),
    "1b": (32000, 2048, 16, 16, 8, 8192),
}


def gradient_shapes(preset):
    vocab, d, layers, heads, kv_heads, ffn = PRESETS[preset]
    q = d // heads
    shapes = {"model.embed_tokens.weight": (vocab, d)}
    for i in range(layers):
        p = f"model.layers.{i}"
        shapes.update({
            f"{p}.input_layernorm.weight": (d,),
            f"{p}.self_attn.q_proj.weight": (heads * q, d),
            f"{p}.self_attn.k_proj.weight": (kv_heads * q, d),
            f"{p}.self_attn.v_proj.weight": (kv_heads * q, d),
            f"{p}.self_attn.o_proj.weight": (d, heads * q),
            f"{p}.post_attention_layernorm.weight": (d,),
            f"{p}.mlp.gate_proj.weight": (ffn, d),
            f"{p}.mlp.up_proj.weight": (ffn, d),
            f"{p}.mlp.down_proj.weight": (d, ffn),
        })
    shapes["model.norm.weight"] = (d,)
    shapes["lm_head.weight"] = (vocab, d)
    return shapes


def dct_basis(n):
    k = torch.arange(n, dtype=torch.float64)
    i = torch.arange(n, dtype=torch.float64)[:, None]
    f = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    f[:, 0] = math.sqrt(1.0 / n)
    return f.to(torch.float32)


class TemplarStyleCompressor:
    def __init__(self, chunk=64, topk=32, bins=256, sigmas=6.0):
        self.chunk, self.topk, self.bins, self.sigmas = chunk, topk, bins, sigmas
        self.bases = {}

    def size(self, n):
        return max(d for d in range(1, min(n, self.chunk) + 1) if n % d == 0)

    def basis(self, n):
        if n not in self.bases:
            self.bases[n] = dct_basis(n)
        return self.bases[n]

    def encode(self, x):
        if x.dim() > 1:
            h, w = self.size(x.shape[0]), self.size(x.shape[1])
            x = x.reshape(x.shape[0] // h, h, x.shape[1] // w, w)  # (y h) (x w) -> y h x w
            return torch.einsum("...ijkl, jb, ld -> ...ikbd", x, self.basis(h), self.basis(w))
        w = self.size(x.shape[0])
        return torch.einsum("...ij, jb -> ...ib", x.reshape(-1, w), self.basis(w))

    def decode(self, c):
        if c.dim() > 2:
            y, xx, h, w = c.shape
            x = torch.einsum("...ijkl, kb, ld -> ...ibjd", c, self.basis(h).T, self.basis(w).T)
            return x.reshape(y * h, xx * w)
        return torch.einsum("...ij, jb -> ...ib", c, self.basis(c.shape[-1]).T).reshape(-1)

    def quantize(self, val):
        offset = self.bins // 2
        shift = val.mean()
        centered = val - shift
        std = centered.norm() / math.sqrt(centered.numel() - 1)
        scale = self.sigmas * std / self.bins
        if scale == 0 or torch.isnan(scale) or torch.isinf(scale):  # a host sync, as in Templar
            scale = torch.tensor(1.0, dtype=centered.dtype)
        q = (centered / scale + offset).round().clamp(0, self.bins - 1).to(torch.uint8)
        sums = torch.zeros(self.bins).scatter_add_(0, q.long().flatten(), centered.flatten())
        counts = torch.zeros(self.bins).scatter_add_(0, q.long().flatten(), torch.ones_like(centered.flatten()))
        lookup = torch.where(counts > 0, sums / counts, torch.zeros_like(sums))
        return q, (shift, scale, lookup)

    def compress(self, x):
        c = self.encode(x)
        shape = c.shape
        if c.dim() > 2:
            c = c.reshape(shape[0], shape[1], -1)  # y x h w -> y x (h w)
        k = min(self.topk, c.shape[-1])
        idx = torch.topk(c.abs(), k=k, dim=-1, largest=True, sorted=False).indices
        val = torch.gather(c, -1, idx)
        q, qp = self.quantize(val)
        return idx, q, qp, shape

    @staticmethod
    def dequantize(q, qp):
        shift, _, lookup = qp
        return lookup[q.long()] + shift

    def decompress(self, idx, val, shape):
        x = torch.zeros(shape)
        if len(shape) > 2:
            x = x.reshape(shape[0], shape[1], -1)
        x.scatter_reduce_(-1, idx, val, reduce="mean", include_self=False)
        return x.reshape(shape)

    def batch_decompress(self, uploads):
        idx, val = [], []
        for i, q, qp, shape in uploads:
            v = self.dequantize(q, qp)
            val.append(v / (torch.norm(v, p=2, dim=-1, keepdim=True) + 1e-8))
            idx.append(i)
        return self.decompress(torch.cat(idx, -1), torch.cat(val, -1), uploads[0][3])


def time_pytorch(tensors, peers, iters, warmup):
    comp = TemplarStyleCompressor()
    compress_s, aggregate_s = [], []
    with torch.no_grad():
        for it in range(warmup + iters):
            t0 = time.perf_counter()
            uploads = []
            for x in tensors.values():
                up = comp.compress(x)
                i, q, qp, shape = up
                comp.decode(comp.decompress(i, comp.dequantize(q, qp), shape))  # error feedback
                uploads.append(up)
            t1 = time.perf_counter()
            for up in uploads:
                comp.decode(comp.batch_decompress([up] * (peers + 1))).sign()
            t2 = time.perf_counter()
            if it >= warmup:
                compress_s.append(t1 - t0)
                aggregate_s.append(t2 - t1)
    return compress_s, aggregate_s


def agreement(tensors, ours_path):
    """Per-chunk index overlap, code equality and decoded error between the two compressors."""
    comp = TemplarStyleCompressor()
    ours = load_file(ours_path)
    same_idx = same_code = total = 0
    worst_decoded = 0.0
    with torch.no_grad():
        for name, x in tensors.items():
            i, q, qp, shape = comp.compress(x)
            mine = ours[f"{name}.idx"].long().reshape(i.shape)
            mine_codes = ours[f"{name}.codes"].reshape(i.shape)
            theirs_sorted, order = i.sort(-1)
            same = (mine == theirs_sorted).all(-1)
            same_idx += int(same.sum())
            total += same.numel()
            same_code += int((mine_codes == torch.gather(q, -1, order)).all(-1)[same].sum())
            decoded = comp.decode(comp.decompress(i, comp.dequantize(q, qp), shape))
            err = (decoded - ours[f"{name}.decoded"]).norm() / decoded.norm().clamp_min(1e-30)
            worst_decoded = max(worst_decoded, float(err))
    return {"chunks": total, "same_indices": same_idx / total, "same_codes": same_code / total,
            "worst_decoded_relative_error": worst_decoded}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--crusades", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "crusades"))
    ap.add_argument("--json", action="store_true", help="print a JSON report instead of a table")
    args = ap.parse_args()

    torch.manual_seed(0)
    tensors = {n: torch.randn(s) * 1e-4 for n, s in gradient_shapes(args.preset).items()}
    gradient_bytes = sum(t.numel() * 4 for t in tensors.values())
    with tempfile.TemporaryDirectory() as tmp:
        grads = os.path.join(tmp, "grads.safetensors")
        save_file(tensors, grads)
        rust = json.loads(subprocess.run(
            [args.crusades, "compress-bench", grads, "--preset", args.preset, "--peers", str(args.peers),
             "--iters", str(args.iters), "--warmup", str(args.warmup), "--json"],
            check=True, capture_output=True, text=True).stdout)
        py_c, py_a = time_pytorch(tensors, args.peers, args.iters, args.warmup)
        ours = os.path.join(tmp, "ours.safetensors")
        subprocess.run([args.crusades, "compress", grads, "-o", ours], check=True, capture_output=True)
        agree = agreement(tensors, ours)

    py_total = [c + a for c, a in zip(py_c, py_a)]
    rows = {
        "compress": (rust["compress_s"]["median"], statistics.median(py_c)),
        "aggregate": (rust["aggregate_s"]["median"], statistics.median(py_a)),
        "total": (rust["total_s"]["median"], statistics.median(py_total)),
    }
    report = {
        "preset": args.preset, "peers": args.peers, "iters": args.iters,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "gradient_bytes": gradient_bytes,
        "median_s": {k: {"rust": r, "pytorch": p, "pytorch_over_rust": p / r} for k, (r, p) in rows.items()},
        "gb_per_s": {k: {"rust": gradient_bytes / r / 1e9, "pytorch": gradient_bytes / p / 1e9} for k, (r, p) in rows.items()},
        "agreement": agree,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{len(tensors)} tensors of the {args.preset} preset, {gradient_bytes / 2**20:.1f} MiB of f32 gradient, "
              f"{args.peers} peers, {args.iters} iterations, {torch.get_num_threads()} threads, torch {torch.__version__}")
        print(f"{'':>10}  {'rust':>10}  {'pytorch':>10}  {'rust GB/s':>9}  {'pytorch/rust':>12}")
        for k, (r, p) in rows.items():
            print(f"{k:>10}  {r * 1e3:>8.1f}ms  {p * 1e3:>8.1f}ms  {gradient_bytes / r / 1e9:>9.2f}  {p / r:>11.2f}×")
        print(f"agreement: {agree['same_indices']:.4%} of {agree['chunks']} chunks pick the same indices, "
              f"{agree['same_codes']:.4%} the same codes; worst decoded error {agree['worst_decoded_relative_error']:.2e}")
    if agree["same_indices"] < 0.999 or agree["worst_decoded_relative_error"] > 1e-3:
        print("error: the two compressors disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
