# Probe (not part of the toolkit), 2026-11-22.
# Question: can Winograd F(2x2,3x3) written as plain ONNX ops beat onnxruntime's direct Conv on
#   VGG16's layer shapes (a way past fcn-bench --ceiling's direct-convolution floor)?
# Answer: no on 3 of 4 shapes (0.24x-1.44x; batched MatMul at ~53 GMAC/s vs the Conv's ~84).
#   Output: winograd_probe.out.
# usage: python winograd_probe.py
import numpy as np, onnx, onnxruntime as ort, time, sys
from onnx import helper as h, TensorProto as T, numpy_helper as nh
BT=np.array([[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]],np.float32)
G=np.array([[1,0,0],[.5,.5,.5],[.5,-.5,.5],[0,0,1]],np.float32)
AT=np.array([[1,1,1,0],[0,1,-1,-1]],np.float32)
def sess(m):
    so=ort.SessionOptions(); so.intra_op_num_threads=2; so.log_severity_level=3
    return ort.InferenceSession(m.SerializeToString(),so,providers=["CPUExecutionProvider"])
def bench(s,x,n=5):
    s.run(None,{"X":x}); t=[]
    for _ in range(n):
        t0=time.perf_counter(); y=s.run(None,{"X":x})[0]; t.append(time.perf_counter()-t0)
    return np.median(t)*1000, y
def direct(W,C,H,Wd):
    g=h.make_graph([h.make_node("Conv",["X","W"],["Y"],pads=[1,1,1,1])],"d",[h.make_tensor_value_info("X",T.FLOAT,[1,C,H,Wd])],[h.make_tensor_value_info("Y",T.FLOAT,None)],[nh.from_array(W,"W")])
    return h.make_model(g,opset_imports=[h.make_opsetid("",17)],ir_version=8)
def wino(W,C,H,Wd):
    Co=W.shape[0]; th,tw=H//2,Wd//2; Tn=th*tw
    K=np.einsum('ia,jb->ijab',BT,BT).reshape(16,1,4,4)
    Kin=np.tile(K,(C,1,1,1)).astype(np.float32)          # [16C,1,4,4], channel c*16+k
    U=np.einsum('ia,oiab,jb->ijoi'.replace('oiab','ocab').replace('ijoi','ijoc'),G,W,G).reshape(16,Co,C).astype(np.float32)
    A2=np.einsum('pi,qj->pqij',AT,AT).reshape(4,16).astype(np.float32)
    cst=lambda n,v: nh.from_array(np.array(v,np.int64),n)
    nodes=[h.make_node("Pad",["X","pads"],["Xp"]),
      h.make_node("Conv",["Xp","Kin"],["V"],strides=[2,2],group=C),
      h.make_node("Reshape",["V","s1"],["V1"]), h.make_node("Transpose",["V1"],["V2"],perm=[1,0,2]),
      h.make_node("MatMul",["U","V2"],["M"]),
      h.make_node("Reshape",["M","s2"],["M2"]), h.make_node("MatMul",["A2","M2"],["Y4"]),
      h.make_node("Reshape",["Y4","s3"],["Y5"]), h.make_node("Transpose",["Y5"],["Y6"],perm=[2,3,0,4,1]),
      h.make_node("Reshape",["Y6","s4"],["Y"])]
    inits=[nh.from_array(Kin,"Kin"),nh.from_array(U,"U"),nh.from_array(A2,"A2"),cst("pads",[0,0,1,1,0,0,1,1]),
      cst("s1",[C,16,Tn]),cst("s2",[16,Co*Tn]),cst("s3",[2,2,Co,th,tw]),cst("s4",[1,Co,H,Wd])]
    g=h.make_graph(nodes,"w",[h.make_tensor_value_info("X",T.FLOAT,[1,C,H,Wd])],[h.make_tensor_value_info("Y",T.FLOAT,None)],inits)
    return h.make_model(g,opset_imports=[h.make_opsetid("",17)],ir_version=8)
for (C,H,Wd) in [(512,70,84),(256,140,170),(128,278,338),(64,558,678)]:
    rng=np.random.default_rng(0); W=(rng.standard_normal((C,C,3,3))*0.05).astype(np.float32); x=rng.standard_normal((1,C,H,Wd)).astype(np.float32)
    td,yd=bench(sess(direct(W,C,H,Wd)),x); tw_,yw=bench(sess(wino(W,C,H,Wd)),x)
    err=np.abs(yd-yw).max()/np.abs(yd).max()
    print(f"C={C} {H}x{Wd}: direct {td:.1f} ms, winograd F(2x2,3x3) {tw_:.1f} ms, speedup {td/tw_:.2f}x, max rel err {err:.1e}",flush=True)
