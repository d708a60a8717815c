"""Any COCO-format keypoint dataset, in three flags (the bundled open-field json by default).

    python main.py --config=configs/custom_coco.py --workdir=/tmp/custom_coco
    python main.py --config=configs/custom_coco.py --workdir=/tmp/custom_coco --mode=eval

train and evaluate on the bundled example (its last 20% of frames held out), then
evaluate the latest checkpoint. Your data, in three flags:

    python main.py --config=configs/custom_coco.py --workdir=/tmp/my_data \
        --config.data.root=/path/to/data --config.data.train_ann=train.json \
        --config.data.val_ann=val.json

The same three flags take other tools' label files (pip install "mamkpd-jax[labels]"):
a DeepLabCut project folder or CollectedData_*.csv / .h5 (Lightning Pose's csv too), a
SLEAP .slp, an Ultralytics data.yaml (its own val: split evaluates), a Label Studio
json export or an .nwb file; each is converted once to a cached COCO json
($XDG_CACHE_HOME/mamkpd_jax/labels, logged), and data.root may stay empty when the paths
are absolute or the file locates its images:

    python main.py --config=configs/custom_coco.py --workdir=/tmp/my_dlc \
        --config.data.root= --config.data.train_ann=/path/to/dlc-project \
        --config.data.val_ann=

Expected result: none stated: it depends on your data.

MamKPD-base at 256x256 wants a GPU; --config.train.num_steps=N makes a quick CPU check.
docs/datasets.md, "Your own COCO-format data" and "Labels from DeepLabCut, SLEAP,
Ultralytics, Label Studio, NWB", says more.

What the json states is read from it, and said in the log: the number of keypoints,
their names and the skeleton (its category; model.num_keypoints stays 0, and a stated
one that disagrees is an error naming both numbers); flip pairs from names that pair up
(left_*/right_*, l_*/r_*, *_l/*_r, leftX/rightX; off: --config.data.auto_flip_pairs=False;
or give --config.data.flip_pairs). Image file names are relative to the json's folder
unless data.train_images / data.val_images name another (relative to data.root). An
empty data.val_ann, or one naming the training json, holds out the last 20% of its
frames (by file name) for evaluation. OKS sigmas: 0.05 each unless data.sigmas.
Metrics go to WORKDIR/eval/metrics_step<N>.json.

Fields: data.root, data.train_ann, data.val_ann (label paths relative to root),
data.train_images, data.val_images, data.flip_pairs, data.auto_flip_pairs, data.sigmas,
data.contiguous_split (> 0: another training fraction of train_ann's frames), data.on_bad
("skip": count and log bad annotations instead of stopping).
"""

from mamkpd_jax import config_lib


def get_config():
  config = config_lib.custom("base")
  config.batch_size = 16
  config.eval.batch_size = 16     # crops per evaluation pass (x2 with the flip test):
                                  # MamKPD-base at 256x256 stays within a CPU's memory
  return config
