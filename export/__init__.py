"""Export stage (installed as ``fcn_deploy.export``): checkpoint -> ONNX, precision variants, parity. Imports torch and onnx."""
