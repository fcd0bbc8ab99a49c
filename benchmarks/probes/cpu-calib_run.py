# Calibration before/after (benchmarks/RESULTS.md ("CPU speed")): old_precision.py = `git show 0a90623:export/precision.py`.
import sys, time, logging, resource
from pathlib import Path
import fcn_deploy.export.precision as P
which, ckpt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if which == "before":
    exec(compile(open("old_precision.py").read(), "old_precision.py", "exec"), P.__dict__)
from fcn_deploy.export.onnx_export import export_onnx
logging.basicConfig(level=logging.WARNING)
cfg = P.CalibConfig(data=Path("../shared/data/camvid"), format="camvid", images=n)
t = time.perf_counter()
export_onnx(ckpt, f"{which}-{Path(ckpt).stem}-{n}.onnx", precision="int8", calib=cfg, verify=False, progress=True)
print(f"RESULT {which} {ckpt} images={n} wall_s={time.perf_counter()-t:.1f} peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024:.0f}", flush=True)
