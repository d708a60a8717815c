"""configs/*.py load by path and validate, their data paths follow mmpose's layout, their
docstrings give the commands; impossible model settings name their field."""

import importlib.util
import os
import pathlib

import pytest

from mamkpd_jax.data_pipelines import pipeline
from mamkpd_jax.models import VARIANTS, ModelConfig, hrvmamba, model_config, parse_model_config
from mamkpd_jax.models.mamkpd.variants import ENCODER_STRIDE

# Input sizes must be multiples of the family's deepest stride.
INPUT_STRIDES = {"mamkpd": ENCODER_STRIDE, "hrvmamba": hrvmamba.INPUT_STRIDE}

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"


def load_module(name):
  spec = importlib.util.spec_from_file_location(name, CONFIG_DIR / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(name):
  return load_module(name).get_config()


ALL_CONFIGS = sorted(path.stem for path in CONFIG_DIR.glob("*.py"))

# Full-dataset configs: (name, variant, dataset, K, (height, width), annotation jsons,
# image folders, best metric), each in mmpose's data layout under data/<dataset>.
COCO_FILES = ("annotations/person_keypoints_train2017.json",
              "annotations/person_keypoints_val2017.json")
MPII_FILES = ("annotations/mpii_train.json", "annotations/mpii_val.json")
AP10K_FILES = ("annotations/ap10k-train-split1.json", "annotations/ap10k-val-split1.json")
FULL_CONFIGS = [
    ("coco_small", "small", "coco", 17, (256, 192), COCO_FILES, ("train2017", "val2017"),
     "AP"),
    ("coco_base", "base", "coco", 17, (256, 192), COCO_FILES, ("train2017", "val2017"),
     "AP"),
    ("coco_large", "large", "coco", 17, (256, 192), COCO_FILES, ("train2017", "val2017"),
     "AP"),
    ("mpii_base", "base", "mpii", 16, (256, 256), MPII_FILES, ("images", "images"), "PCKh"),
    ("mpii_large", "large", "mpii", 16, (256, 256), MPII_FILES, ("images", "images"),
     "PCKh"),
    ("ap10k_base", "base", "ap10k", 17, (256, 256), AP10K_FILES, ("data", "data"), "AP"),
    ("ap10k_large", "large", "ap10k", 17, (256, 256), AP10K_FILES, ("data", "data"), "AP"),
]
# Configs on the bundled data: (name, K).
SAMPLE_CONFIGS = [("sample_coco", 17), ("custom_coco", 4), ("sample_openfield", 4),
                  ("sample_openfield_hrvmamba", 4)]
# HRVMamba on COCO: (name, variant, (height, width), drop_path_rate, drop_rate).
HRVMAMBA_CONFIGS = [
    ("coco_hrvmamba_tiny", "tiny", (256, 192), 0.0, 0.0),
    ("coco_hrvmamba_small", "small", (256, 192), 0.1, 0.1),
    ("coco_hrvmamba_base", "base", (256, 192), 0.2, 0.0),
    ("coco_hrvmamba_small_384x288", "small", (384, 288), 0.1, 0.1),
    ("coco_hrvmamba_base_384x288", "base", (384, 288), 0.2, 0.0),
]


def test_every_config_is_in_a_table():
  assert ALL_CONFIGS == sorted([c[0] for c in FULL_CONFIGS] + [c[0] for c in SAMPLE_CONFIGS]
                               + [c[0] for c in HRVMAMBA_CONFIGS])


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_every_config_loads_and_validates(name):
  config = pipeline.resolve_custom_config(load_config(name))     # custom: K from the json
  model = parse_model_config(config.model)
  assert pipeline.dataset_info(config).num_keypoints == model.num_keypoints
  assert config.data.input_height % INPUT_STRIDES[model.name] == 0
  assert config.data.input_width % INPUT_STRIDES[model.name] == 0
  for field in ("train_ann", "val_ann", "train_images", "val_images", "det_file",
                "headbox_file"):
    assert not os.path.isabs(config.data[field]), field     # relative to data.root
  assert config.data.train_ann.endswith(".json")
  assert config.data.val_ann.endswith(".json") or pipeline.train_fraction(config.data) > 0
  assert config.batch_size > 0 and config.per_device_batch_size == 0


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_every_docstring_gives_the_commands(name):
  doc = load_module(name).__doc__
  assert f"python main.py --config=configs/{name}.py --workdir=/tmp/{name}" in doc
  assert "--mode=eval" in doc and "expected result" in doc.lower()


@pytest.mark.parametrize("name, variant, dataset, num_keypoints, size, anns, images, best",
                         FULL_CONFIGS, ids=[c[0] for c in FULL_CONFIGS])
def test_full_configs(name, variant, dataset, num_keypoints, size, anns, images, best):
  config = load_config(name)
  model = ModelConfig.from_config(config.model)
  assert model.variant == variant
  assert (model.dims, model.depths) == (VARIANTS[variant]["dims"], VARIANTS[variant]["depths"])
  assert model.use_stem == (variant != "small")
  assert model.num_keypoints == num_keypoints
  data = config.data
  assert (data.dataset, data.root) == (dataset, f"data/{dataset}")
  assert (data.input_height, data.input_width) == size
  assert (data.train_ann, data.val_ann) == anns
  assert (data.train_images, data.val_images) == images
  assert (data.det_file, data.headbox_file, data.contiguous_split) == ("", "", 0.0)
  assert config.eval.best_metric == best
  assert config.train.optimizer == "adam" and config.train.learning_rate == 1e-3


def test_mpii_augmentation_is_mmpose_mpii():
  """mmpose's MPII configs: RandomBBoxTransform(shift_prob=0), no RandomHalfBody."""
  data = load_config("mpii_base").data
  assert (data.half_body_prob, data.shift_prob) == (0.0, 0.0)
  assert data.flip_prob == 0.5 and data.rotate_prob == 0.6


@pytest.mark.parametrize("name, num_keypoints", SAMPLE_CONFIGS)
def test_sample_configs_validate(name, num_keypoints):
  config = pipeline.resolve_custom_config(load_config(name))
  assert parse_model_config(config.model).num_keypoints == num_keypoints
  data = config.data
  assert os.path.isfile(pipeline.resolve_path(data, data.train_ann))
  assert pipeline.train_fraction(data) > 0 or \
      os.path.isfile(pipeline.resolve_path(data, data.val_ann))
  assert os.path.isdir(pipeline.image_folder(data, "train"))
  assert os.path.isdir(pipeline.image_folder(data, "val"))


def test_model_config_round_trips_every_field():
  config = model_config("large")
  assert ModelConfig.from_config(config).decoder_dims == (256, 128)
  assert set(config.keys()) == set(ModelConfig.__dataclass_fields__) | {"name"}


@pytest.mark.parametrize("name, variant, size, drop_path_rate, drop_rate", HRVMAMBA_CONFIGS)
def test_hrvmamba_configs_follow_the_authors_recipe(name, variant, size, drop_path_rate,
                                                    drop_rate):
  config = load_config(name)
  model = parse_model_config(config.model)
  assert (model.name, model.variant, model.widths) == (
      "hrvmamba", variant, hrvmamba.VARIANTS[variant]["widths"])
  assert (model.drop_path_rate, model.drop_rate) == (drop_path_rate, drop_rate)
  assert (config.data.input_height, config.data.input_width) == size
  assert config.data.codec == "msra" and config.eval.flip_test
  train = config.train
  assert (train.optimizer, train.learning_rate, train.weight_decay) == ("adamw", 5e-4, 0.01)
  assert (train.warmup_steps, train.num_epochs) == (500, 210)
  assert tuple(train.lr_decay_epochs) == (170, 200) and train.grad_clip_norm == 0.0


# (field, bad value, words the error must contain)
BAD_FIELDS = [
    ("scan_impl", "triton", "available implementations"),
    ("dims", (96, 192), "three stages"),
    ("depths", (2, 0, 6), "block"),
    ("d_state", 0, ">= 1"),
    ("ssm_ratio", 1.01, "positive integer"),
    ("decoder_dims", (256, 256, 256), "two positive widths"),
    ("dtype", "float16", "bfloat16"),
    ("drop_path_rate", 1.0, "[0, 1)"),
    ("d_conv", 4, "odd"),
    ("num_keypoints", 0, ">= 1"),
]


@pytest.mark.parametrize("field,value,words", BAD_FIELDS)
def test_impossible_field_is_named(field, value, words):
  config = dict(model_config("base"))
  config[field] = value
  with pytest.raises(ValueError, match=rf"config\.model\.{field}=") as error:
    ModelConfig.from_config(config)
  assert words in str(error.value)


def test_unknown_field_is_named():
  config = dict(model_config("base"), ssm_rank=4)
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['ssm_rank'\]"):
    ModelConfig.from_config(config)


def test_unknown_variant():
  with pytest.raises(ValueError, match="unknown MamKPD variant 'huge'"):
    model_config("huge")
