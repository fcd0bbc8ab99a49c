# Probe (not part of the toolkit), 2026-11-22.
# Question: what does switching off QDQPropagationTransformer do to the ResNet-18 float-stem int8 files?
# Answer: 54.3 vs 64.0 ms on the cpu-layout file with bit-identical outputs (it moved a Q in front of
#   the float stem's MaxPool); kept as an opt-in OrtRunner(disabled_optimizers=...). Output: ort_qdqprop.out
#   (run on final_cpu.onnx / final_trt.onnx = the -v2 float-stem files of that day).
# usage: python ort_qdqprop.py MODEL.onnx [MODEL.onnx ...]
import numpy as np, onnxruntime as ort, time
def mk(p, dis):
    so=ort.SessionOptions(); so.intra_op_num_threads=2; so.log_severity_level=3
    return ort.InferenceSession(p, so, providers=["CPUExecutionProvider"], disabled_optimizers=(["QDQPropagationTransformer"] if dis else None))
import sys
files=sys.argv[1:]
if not files: sys.exit("usage: python ort_qdqprop.py MODEL.onnx [MODEL.onnx ...]")
S=[(f.split('/')[-1],d,mk(f,d)) for f in files for d in (False,True)]
x=np.random.default_rng(0).standard_normal((1,3,360,480)).astype(np.float32)
T={}
for n,d,s in S: s.run(None,{"input":x}); s.run(None,{"input":x})
for r in range(15):
    for n,d,s in S:
        time.sleep(0.05); t0=time.perf_counter(); y=s.run(None,{"input":x}); T.setdefault((n,d),[]).append(time.perf_counter()-t0)
outs={}
for n,d,s in S: outs[(n,d)]=s.run(None,{"input":x})[0]
for (n,d),t in T.items(): print(f"{n:35s} disabled={d!s:5s} median {np.median(t)*1000:6.1f} ms")
for f in files:
    n=f.split('/')[-1]; a=outs[(n,False)]; b=outs[(n,True)]
    print(n, "max|diff|", float(np.abs(a-b).max()), "label agree", float((a.argmax(1)==b.argmax(1)).mean()))
