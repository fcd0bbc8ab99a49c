# Probe (not part of the toolkit), 2026-11-22.
# Question: does onnxruntime's QDQPropagationTransformer help or hurt the int8 cpu-layout files?
# Answer: VGG16 needs it (879 ms with it, 1355 ms without: 5 convs after a MaxPool fall back to
#   float without it), so the runtime keeps onnxruntime's default. Output: ort_profile.out.
# usage: python ort_profile.py MODEL.onnx 0|1     (1 = without QDQPropagationTransformer)
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
