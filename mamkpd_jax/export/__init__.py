"""Shipping a trained model: safetensors weights (`pretrained`), `jax.export` artefacts
(`serving`) and ONNX graphs (`onnx_export`), each with the same model metadata."""
