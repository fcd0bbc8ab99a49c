# python cpu-nodeprof.py MODEL.onnx: per-op-type kernel time on onnxruntime CPU and OpenVINO CPU (benchmarks/RESULTS.md ("CPU speed"), section 6)
"""Per-op-type time of one model on onnxruntime CPU and OpenVINO CPU (shares within each run)."""
import json, sys, collections, numpy as np, os
path, runs = sys.argv[1], 6
x = np.random.default_rng(0).integers(0, 256, (1, 360, 480, 3), dtype=np.uint8) if "u8" in path else \
    np.random.default_rng(0).standard_normal((1, 3, 360, 480)).astype(np.float32)
import onnxruntime as ort
so = ort.SessionOptions(); so.intra_op_num_threads = 2; so.enable_profiling = True; so.log_severity_level = 3
so.profile_file_prefix = "ortprof"
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
name = s.get_inputs()[0].name
for _ in range(runs): s.run(None, {name: x})
ev = json.load(open(s.end_profiling()))
by = collections.Counter(); n_nodes = collections.Counter()
for e in ev:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        by[e["args"]["op_name"]] += e["dur"]; n_nodes[e["args"]["op_name"]] += 1
tot = sum(by.values())
print(f"onnxruntime {path}: {tot/runs/1e3:.1f} ms/run in kernels")
for op, d in by.most_common(): print(f"  {op:24s} {100*d/tot:5.1f} %  {d/runs/1e3:7.2f} ms  nodes {n_nodes[op]//runs}")
import openvino as ov
core = ov.Core()
c = core.compile_model(core.read_model(path), "CPU", {"PERF_COUNT": True, "INFERENCE_NUM_THREADS": 2, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
r = c.create_infer_request()
agg = collections.Counter(); types = collections.Counter()
for i in range(runs):
    r.infer({0: x})
    if i == 0: continue
    for p in r.profiling_info:
        us = p.real_time.total_seconds() * 1e6
        agg[(p.node_type, p.exec_type)] += us
tot = sum(agg.values())
print(f"openvino {path}: {tot/(runs-1)/1e3:.1f} ms/run in nodes")
for (t, e), d in agg.most_common(14): print(f"  {t:18s} {e:28s} {100*d/tot:5.1f} %  {d/(runs-1)/1e3:7.2f} ms")
