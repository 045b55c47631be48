"""Golden features of pytorch-fid 0.3.0's Inception network, for tests/generation/nets/test_inception_fid.py.

The oracle is pytorch-fid itself, which needs torchvision; neither is a project dependency (torchvision would pull a
CUDA torch), so install both into a throwaway folder, without dependencies, and run this script from the repository
root with that folder on the path:

    .venv/bin/python -m pip install --target /tmp/fidoracle --no-deps pytorch-fid==0.3.0 torchvision==0.28.0
    PYTHONPATH=/tmp/fidoracle .venv/bin/python scripts/golden/make_fid_golden.py

It writes ``tests/generation/data/fid_inception_golden.npz`` (about 40 kB):

* ``layout``: JSON ``[[key, shape], ...]``, the state dict of ``torchvision.models.inception_v3(num_classes=1008,
  aux_logits=False)`` in its order, which is what pytorch-fid's ``fid_inception_v3`` loads the released file into;
* ``state_sums``: the sum of every tensor of the seeded random state dict below (guards the recipe);
* ``images_small`` / ``images_large``: sha256 of the generated test images (guards the image recipe);
* ``features_small`` (2, 2048) and ``features_large`` (1, 2048), float32: ``InceptionV3([3])`` pool3 features
  of those images, computed by pytorch-fid's own code (its ``fid_inception_v3`` with the patched blocks, its
  resize and scaling), with ``load_state_dict_from_url`` replaced by a function returning the seeded state dict;
* ``versions``: JSON of the oracle's package versions.

The test imports the recipes (:func:`seeded_state_dict`, :func:`golden_images`) from this file and rebuilds both
without the oracle; the stored sums and hashes make any drift since the golden file was made fail loudly.

torchvision 0.28.0 is a CUDA build whose C++ ops cannot load with the CPU torch; defining the schemas of its two
``nms`` ops before importing it (:func:`_shim_torchvision_ops`) is enough for ``torchvision.models`` to import
(environment.md, "torchvision"). Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zlib
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "tests" / "generation" / "data" / "fid_inception_golden.npz"
SEED = 20151205


def seeded_state_dict(layout: dict[str, tuple[int, ...]], seed: int = SEED) -> dict[str, torch.Tensor]:
    """A random state dict of ``layout``, every tensor drawn from its own stream (seed, crc32 of the key), so the
    values depend neither on the key order nor on the other keys. Scales keep the activations of the 94 conv
    layers in a useful range: He-normal convs, BN weight 1 + 0.1 N, bias and running mean 0.1 N, running var
    U(0.5, 1.5), fc 0.01 N with zero bias."""
    state = {}
    for key, shape in layout.items():
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0, dtype=torch.long)
            continue
        if key.endswith("conv.weight"):
            values = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        elif key.endswith("running_var"):
            values = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("bn.weight"):
            values = 1.0 + 0.1 * rng.standard_normal(shape)
        elif key.endswith(("bn.bias", "running_mean")):
            values = 0.1 * rng.standard_normal(shape)
        elif key == "fc.weight":
            values = 0.01 * rng.standard_normal(shape)
        elif key == "fc.bias":
            values = np.zeros(shape)
        else:
            raise KeyError(f"no recipe for {key}")
        state[key] = torch.from_numpy(np.asarray(values, dtype=np.float32))
    return state


def golden_images(height: int, width: int, count: int, salt: int) -> np.ndarray:
    """(count, height, width, 3) uint8 RGB from integer arithmetic only (identical on every machine): smooth
    ramps plus a hashed texture, different per image and channel."""
    y, x = np.mgrid[0:height, 0:width].astype(np.int64)
    images = np.empty((count, height, width, 3), dtype=np.uint8)
    for n in range(count):
        for c in range(3):
            k = salt * 7 + n * 3 + c
            ramp = (x * (3 + k % 5) + y * (2 + k % 3) + 40 * k) % 256
            texture = ((x * 73856093) ^ (y * 19349663) ^ (k * 83492791)) % 97
            images[n, :, :, c] = ((ramp + texture) % 256).astype(np.uint8)
    return images


GOLDEN_INPUTS = {"small": (64, 96, 2, 1), "large": (331, 301, 1, 2)}  # name: (height, width, count, salt)


def to_unit_batch(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1], as torchvision's ToTensor in pytorch-fid."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().float().div(255)


def _shim_torchvision_ops() -> None:
    library = torch.library.Library("torchvision", "DEF")  # noqa: F841 (kept alive by the registry)
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _shim_torchvision_ops.library = library


def main() -> None:
    _shim_torchvision_ops()
    try:
        import torchvision
        from pytorch_fid import inception as pytorch_fid_inception
    except ImportError as exc:
        sys.exit(f"the oracle is not importable ({exc}); see this script's docstring")

    base = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
    layout = {key: tuple(value.shape) for key, value in base.state_dict().items()}
    state = seeded_state_dict(layout)
    # pytorch-fid fetches the released file with load_state_dict_from_url and loads it strictly into its net.
    pytorch_fid_inception.load_state_dict_from_url = lambda *args, **kwargs: dict(state)
    model = pytorch_fid_inception.InceptionV3([pytorch_fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()

    arrays = {
        "layout": np.array(json.dumps([[key, list(shape)] for key, shape in layout.items()])),
        "state_sums": np.array([state[key].double().sum().item() for key in layout]),
        "versions": np.array(json.dumps({name: metadata.version(name) for name in ("pytorch-fid", "torchvision",
                                                                                    "torch", "numpy")})),
    }
    with torch.inference_mode():
        for name, (height, width, count, salt) in GOLDEN_INPUTS.items():
            images = golden_images(height, width, count, salt)
            (pool3,) = model(to_unit_batch(images))  # (N, 2048, 1, 1)
            arrays[f"features_{name}"] = pool3.flatten(1).numpy().astype(np.float32)
            arrays[f"images_{name}"] = np.array(hashlib.sha256(images.tobytes()).hexdigest())
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUTPUT, **arrays)
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    parameters = sum(int(np.prod(shape)) for key, shape in layout.items() if not key.endswith(buffers))
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes): {len(layout)} keys, {parameters} parameters; "
          f"features {[arrays[f'features_{n}'].shape for n in GOLDEN_INPUTS]}")


if __name__ == "__main__":
    main()
