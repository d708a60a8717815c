"""Installs mamkpd-jax.

The repository keeps `kernels/` and `data_pipelines/` at its top level (the project
layout), but PyPI already has unrelated packages called `kernels` and
`data-pipelines`, so they are installed as `mamkpd_jax.kernels` and
`mamkpd_jax.data_pipelines` through `package_dir`. Nothing here claims a top-level
name other than `mamkpd_jax`. Configs are loaded by path and scripts run as files.
"""

import setuptools

INSTALL_REQUIRES = [
    "absl-py>=2.1",
    "flax>=0.12",
    "grain>=0.2.10",                  # input pipelines (data_pipelines/transforms.py)
    "flatbuffers>=24",                # jax.export serialisation (mamkpd export)
    "jax>=0.10",
    # Learning curves and keypoint pictures as PNGs (what mmpose uses too).
    "matplotlib>=3.8",
    "ml-collections>=1.0",
    "numpy>=1.26",
    "optax>=0.2",                     # the training recipes (Adam / AdamW, schedules)
    "orbax-checkpoint>=0.11",         # checkpoints: async, keep-last-k + best, resume
    # Image decoding and the affine crop warp: cv2.warpAffine is what mmpose uses, so
    # crops match it pixel for pixel; one library does both.
    "opencv-python-headless>=4.8",
    "pycocotools>=2.0.7",             # COCO-format annotations and the COCO metrics
    # Shippable weights (mamkpd_jax/export/pretrained.py): Estimator.from_pretrained reads
    # model.safetensors (0.5 MB wheel, no dependencies).
    "safetensors>=0.4",
    "scipy>=1.11",                    # MPII head boxes (mpii_gt_val.mat); also jax's
    # TensorBoard event files without TensorFlow (flax.metrics.tensorboard and clu's
    # writer both import TensorFlow; tensorboardX needs only protobuf).
    "tensorboardX>=2.6",
]
# Optional: pack COCO-format data into ArrayRecord (data_pipelines/tfds_builder.py).
# No TensorFlow needed. importlib_resources: tensorflow-datasets 4.9.10 uses it on every
# Python but declares it only below 3.9 (tensorflow/datasets#11212).
TFDS_REQUIRES = [
    "array-record>=0.5.0",
    "importlib_resources",
    "tensorflow-datasets>=4.9.10",
]
# mamkpd convert: .pth input (torch); .safetensors input needs only the
# core safetensors dependency.
CONVERT_REQUIRES = []
TORCH_REQUIRES = ["torch>=2.1"]
# mamkpd_jax.inference.detectors.YoloxOnnxDetector runs YOLOX ONNX exports (onnxruntime); ONNX
# export (mamkpd_jax/export/onnx_export.py) needs onnx and onnx-ir (jax2onnx's graph IR);
# jax2onnx itself pins orbax-checkpoint<0.11.37 (never imported), so it is installed
# apart with --no-deps: docs/export.md, "ONNX".
ONNX_REQUIRES = ["onnxruntime>=1.17", "onnx>=1.15", "onnx-ir>=0.2.1"]
# Other tools' label and prediction files (DeepLabCut, SLEAP, Ultralytics, Label Studio,
# NWB): sleap-io reads and writes them all into one Labels object
# (data_pipelines/labels.py, inference/label_files.py). It brings pandas, pynwb and a
# rendering stack, so it is an extra; COCO json needs none of it. Below 0.10: our DLC
# reader uses its csv row parsers (labels.py says why). PyTables: DeepLabCut's .h5 tables.
LABELS_REQUIRES = ["sleap-io>=0.9.5,<0.10", "tables>=3.9"]
DEV_REQUIRES = [
    # The test suite executes notebooks/demo.ipynb.
    "ipykernel>=6",
    "nbclient>=0.10",
    "nbformat>=5.9",
    "pytest>=8",
    *TFDS_REQUIRES,    # so the suite tests the ArrayRecord builder too
    *ONNX_REQUIRES,    # the YOLOX detector's tests; the ONNX export tests with jax2onnx
    *LABELS_REQUIRES,  # reading and writing DeepLabCut, SLEAP, Ultralytics, ... files
]

setuptools.setup(
    name="mamkpd-jax",
    version="0.1.0",
    description="MamKPD (Mamba keypoint detection) in JAX/Flax NNX with a Pallas selective scan.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # Python 3.11 gets JAX 0.10.x; 3.12 and 3.13 get JAX 0.12.x (.ci/run tests 3.11 and 3.12).
    python_requires=">=3.11",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    ],
    packages=[
        "mamkpd_jax",
        "mamkpd_jax.benchmarking",
        "mamkpd_jax.commands",
        "mamkpd_jax.evaluation",
        "mamkpd_jax.export",
        "mamkpd_jax.inference",
        "mamkpd_jax.models",
        "mamkpd_jax.models.mamkpd",
        "mamkpd_jax.models.hrvmamba",
        "mamkpd_jax.training",
        "mamkpd_jax.kernels",
        "mamkpd_jax.data_pipelines",
    ],
    package_dir={
        "mamkpd_jax": "mamkpd_jax",
        "mamkpd_jax.kernels": "kernels",
        "mamkpd_jax.data_pipelines": "data_pipelines",
    },
    # The CPU kernels' C++ sources: compiled on the user's machine on first use
    # (kernels/cpu_kernels.py).
    package_data={"mamkpd_jax.kernels": ["*.cc", "*.h"]},
    install_requires=INSTALL_REQUIRES,
    # `mamkpd train|eval|predict|track|export|benchmark|convert` (mamkpd_jax/cli.py).
    entry_points={"console_scripts": ["mamkpd=mamkpd_jax.cli:main"]},
    # peers: the PyTorch models `mamkpd benchmark` times beside ours, in PyTorch and in
    # ONNX Runtime (mamkpd_jax/benchmarking/peers.py).
    extras_require={"dev": DEV_REQUIRES, "tfds": TFDS_REQUIRES,
                    "convert": CONVERT_REQUIRES, "torch": TORCH_REQUIRES,
                    "onnx": ONNX_REQUIRES,
                    "labels": LABELS_REQUIRES, "peers": [*TORCH_REQUIRES, *ONNX_REQUIRES]},
)
