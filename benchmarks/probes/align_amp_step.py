"""One training step of ResNet-18 FCN-8s (batch 8, 288x384, 11 classes, AdamW, weighted CE) in
fp32 / bf16 autocast, NCHW / channels_last, interleaved step by step (one step of each mode per
round, in turn) so the ratios share the machine's load.
Usage: python benchmarks/probes/align_amp_step.py [ROUNDS] [STEPS] [HEAD]  (prints JSON)"""
import json, os, sys, time
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch
import torch.nn.functional as F
from fcn_deploy.training.models import build_model

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
head = sys.argv[3] if len(sys.argv) > 3 else "aligned"
torch.set_num_threads(2)
torch.manual_seed(0)
x = torch.randn(8, 3, 288, 384)
y = torch.randint(0, 11, (8, 288, 384))
w = torch.rand(11) + 0.5
modes = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]
models = {}
for prec, cl in modes:
    m = build_model("fcn8s", "resnet18", 11, head_alignment=head).train()
    if cl:
        m = m.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    models[(prec, cl)] = (m, opt)

def step(prec, cl):
    m, opt = models[(prec, cl)]
    xi = x.contiguous(memory_format=torch.channels_last) if cl else x
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
        out = m(xi)
    loss = F.cross_entropy(out.float(), y, weight=w)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

times = {f"{p}{'-cl' if c else ''}": [] for p, c in modes}
for prec, cl in modes:
    step(prec, cl)  # warm-up
for r in range(rounds):
    for _ in range(steps):
        for prec, cl in modes:
            t0 = time.perf_counter(); step(prec, cl); times[f"{prec}{'-cl' if cl else ''}"].append(time.perf_counter() - t0)
    print(f"round {r}: load {os.getloadavg()}", file=sys.stderr)
ratios = [a / b for a, b in zip(times["fp32"], times["bf16"])]
med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
print(json.dumps({"head": head, "threads": 2, "median_s": med, "all_s": times,
                  "bf16_over_fp32": med["fp32"] / med["bf16"],
                  "per_step_fp32_over_bf16_median": sorted(ratios)[len(ratios) // 2],
                  "bf16_over_bf16cl": med["bf16"] / med["bf16-cl"], "bf16cl_over_fp32": med["fp32"] / med["bf16-cl"],
                  "load_end": os.getloadavg(), "torch": torch.__version__,
                  "avx512_bf16": torch.cpu._is_avx512_bf16_supported()}, indent=1))
