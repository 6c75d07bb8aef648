"""The everyday alternative: PyTorch batch-1 latency per time step on this machine's CPU.

Streams one step at a time through the shipped 12 -> 32 GRU (+ head), as a device doing online
inference would, and also times a whole 29-step sequence in one call. Prints a markdown table, then
a short note.

    python bench/torch_latency.py
"""

from __future__ import annotations

import time

import numpy as np
from common import DATA, table


def main() -> None:
    import torch

    torch.set_num_threads(1)
    sd = torch.load(DATA / "japanese_vowels_gru.pt", weights_only=True)
    gru = torch.nn.GRU(12, 32, batch_first=True)
    head = torch.nn.Linear(32, 9)
    gru.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("gru.")})
    head.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("head.")})
    x = torch.from_numpy(np.load(DATA / "japanese_vowels_test.npz")["x"][:1].copy())
    rows = []
    with torch.inference_mode():
        for threads in (1, 2):
            torch.set_num_threads(threads)
            cell = torch.nn.GRUCell(12, 32)
            cell.weight_ih.copy_(gru.weight_ih_l0)
            cell.weight_hh.copy_(gru.weight_hh_l0)
            cell.bias_ih.copy_(gru.bias_ih_l0)
            cell.bias_hh.copy_(gru.bias_hh_l0)
            h = torch.zeros(1, 32)
            for _ in range(200):
                h = cell(x[:, 0], h)
            n = 5000
            t0 = time.perf_counter()
            for i in range(n):
                h = cell(x[:, i % 29], h)
            step_us = (time.perf_counter() - t0) / n * 1e6
            for _ in range(50):
                head(gru(x)[0][:, -1])
            m = 1000
            t0 = time.perf_counter()
            for _ in range(m):
                head(gru(x)[0][:, -1])
            seq_us = (time.perf_counter() - t0) / m * 1e6
            rows.append([threads, f"{step_us:.1f}", f"{seq_us:.1f}", f"{seq_us / 29:.1f}"])
    print(table(["threads", "GRUCell step (us)", "29-step sequence + head (us)", "per step in sequence (us)"],
                rows))
    print(f"\nPyTorch {torch.__version__} on the CPU, batch 1, 12 -> 32 GRU + 9-way head; GRUCell: "
          f"mean of {n} single-step calls; sequence: mean of {m} calls of the GRU on a whole "
          "29-step sequence plus the head. Wall-clock times: they depend on what else the "
          "machine is running.")

if __name__ == "__main__":
    main()
