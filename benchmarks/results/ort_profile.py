# ORT per-op profile of one model, with (0) or without (1) QDQPropagationTransformer.
# usage: python ort_profile.py MODEL.onnx 0|1
import sys, json, time, numpy as np, onnxruntime as ort, collections
path=sys.argv[1]; dis=sys.argv[2]=="1"
so=ort.SessionOptions(); so.intra_op_num_threads=2; so.enable_profiling=True; so.log_severity_level=3
s=ort.InferenceSession(path,so,providers=["CPUExecutionProvider"],disabled_optimizers=(["QDQPropagationTransformer"] if dis else None))
x=np.random.rand(1,3,360,480).astype(np.float32)
s.run(None,{"input":x}); t=[]
for i in range(3):
    t0=time.perf_counter(); s.run(None,{"input":x}); t.append(time.perf_counter()-t0)
print(path.split('/')[-1], "disabled" if dis else "default", "median ms", round(sorted(t)[1]*1000,1))
ev=json.load(open(s.end_profiling()))
agg=collections.Counter(); cnt=collections.Counter()
for e in ev:
    if e.get("cat")=="Node" and e["name"].endswith("_kernel_time"):
        op=e["args"].get("op_name"); agg[op]+=e["dur"]; cnt[op]+=1
for op,d in agg.most_common(6): print(f"   {op:22s} {d/1000/4:8.1f} ms/run n={cnt[op]//4}")
