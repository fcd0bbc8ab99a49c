# Side run: int8 files with and without QDQPropagationTransformer, 15 interleaved rounds, 50 ms settle.
# Paths are the ones used on 2026-11-22 (final_*.onnx = r18/camvid_r18_fcn8s-int8*-v2.onnx).
import numpy as np, onnxruntime as ort, time
def mk(p, dis):
    so=ort.SessionOptions(); so.intra_op_num_threads=2; so.log_severity_level=3
    return ort.InferenceSession(p, so, providers=["CPUExecutionProvider"], disabled_optimizers=(["QDQPropagationTransformer"] if dis else None))
files=["/tmp/int8exp/final_cpu.onnx","/tmp/int8exp/final_trt.onnx","/work/bench/r18/camvid_r18_fcn8s-int8cpu.onnx","/work/bench/r18/camvid_r18_fcn8s-fp32.onnx"]
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
