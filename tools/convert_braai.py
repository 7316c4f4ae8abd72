"""One-time converter: braai d6_m7 Keras model -> ``ztfsds/data/braai_d6_m7.npz``.

braai (Duev et al. 2019, MNRAS 489, 3582; MIT licence, github.com/dmitryduev/braai) is the VGG6 CNN whose
score is the ``drb`` field of every ZTF alert since mid-2019 (``drbversion = d6_m7``). ztfsds runs it in
numpy (`ztfsds.subtract.braai`), so the package ships the weights as a plain ``.npz`` and needs neither
TensorFlow nor HDF5 at run time.

This script reads the published files

- ``d6_m7.architecture.json`` (Keras 2.2.4-tf ``model.to_json()``) and
- ``d6_m7.weights.h5`` (Keras ``model.save_weights()``, HDF5: needs h5py, which is NOT a ztfsds dependency:
  ``pip install h5py`` for this one run),

checks that the architecture is exactly the layer sequence `ztfsds.subtract.braai` implements (conv 3x3
valid ReLU x2, max-pool 2, dropout, conv x2, max-pool 4, dropout, flatten, dense 256 ReLU, dropout, dense 1
sigmoid; channels-last, stride 1, bias on) and writes, all float32 in their Keras layouts:

``conv1_kernel`` (3, 3, 3, 16), ``conv1_bias`` (16,), ... ``conv4_kernel`` (3, 3, 32, 32), ``conv4_bias``,
``fc_1_kernel`` (1152, 256), ``fc_1_bias``, ``fc_out_kernel`` (256, 1), ``fc_out_bias`` (1,);

and the architecture facts the numpy forward pass relies on: ``layers`` (layer class and name, one string
each, in order), ``pool_sizes`` (2, 4), ``input_shape`` (63, 63, 3), ``drbversion`` ('d6_m7'),
``keras_version`` and ``source`` (where the weights came from). Run once from the repository root::

    python tools/convert_braai.py /work/shared/data/braai/models

and copy the MIT licence next to it (``ztfsds/data/braai_LICENSE``).
"""

import json
import sys
from pathlib import Path

import h5py
import numpy as np

MODEL = "d6_m7"
# (Keras class, name, key facts) the numpy forward pass implements, in order
EXPECTED = [
    ("Conv2D", "conv1", {"filters": 16, "activation": "relu"}),
    ("Conv2D", "conv2", {"filters": 16, "activation": "relu"}),
    ("MaxPooling2D", "max_pooling2d", {"pool_size": [2, 2], "strides": [2, 2], "padding": "valid"}),
    ("Dropout", "dropout", {}),
    ("Conv2D", "conv3", {"filters": 32, "activation": "relu"}),
    ("Conv2D", "conv4", {"filters": 32, "activation": "relu"}),
    ("MaxPooling2D", "max_pooling2d_1", {"pool_size": [4, 4], "strides": [4, 4], "padding": "valid"}),
    ("Dropout", "dropout_1", {}),
    ("Flatten", "flatten", {"data_format": "channels_last"}),
    ("Dense", "fc_1", {"units": 256, "activation": "relu", "use_bias": True}),
    ("Dropout", "dropout_2", {}),
    ("Dense", "fc_out", {"units": 1, "activation": "sigmoid", "use_bias": True}),
]
CONV_COMMON = {"kernel_size": [3, 3], "strides": [1, 1], "padding": "valid", "data_format": "channels_last",
               "dilation_rate": [1, 1], "use_bias": True}


def check_architecture(arch):
    """Raise if the Keras JSON is not the VGG6 layer sequence the numpy implementation assumes."""
    layers = arch["config"]["layers"]
    if arch["class_name"] != "Sequential" or len(layers) != len(EXPECTED):
        raise SystemExit(f"unexpected model: {arch['class_name']} with {len(layers)} layers")
    if layers[0]["config"]["batch_input_shape"][1:] != [63, 63, 3]:
        raise SystemExit(f"unexpected input shape {layers[0]['config']['batch_input_shape']}")
    for layer, (cls, name, facts) in zip(layers, EXPECTED):
        cfg = layer["config"]
        want = dict(facts, **CONV_COMMON) if cls == "Conv2D" else facts
        got = {k: cfg.get(k) for k in want}
        if layer["class_name"] != cls or cfg["name"] != name or got != want:
            raise SystemExit(f"layer {cfg['name']} ({layer['class_name']}) is {got}, expected {cls} {name} {want}")
    return [f"{cls}:{name}" for cls, name, _ in EXPECTED]


def main(folder):
    folder = Path(folder)
    arch = json.loads((folder / f"{MODEL}.architecture.json").read_text())
    layer_names = check_architecture(arch)
    out = {}
    with h5py.File(folder / f"{MODEL}.weights.h5", "r") as h5:
        for name in ("conv1", "conv2", "conv3", "conv4", "fc_1", "fc_out"):
            for part in ("kernel", "bias"):
                out[f"{name}_{part}"] = np.asarray(h5[f"{name}/{name}/{part}:0"], dtype=np.float32)
        keras_version = h5.attrs["keras_version"]
        keras_version = keras_version.decode() if isinstance(keras_version, bytes) else str(keras_version)
    assert out["fc_1_kernel"].shape == (6 * 6 * 32, 256), out["fc_1_kernel"].shape
    out["layers"] = np.array(layer_names)
    out["pool_sizes"] = np.array([2, 4], dtype=np.int8)
    out["input_shape"] = np.array([63, 63, 3], dtype=np.int8)
    out["drbversion"] = np.array(MODEL)
    out["keras_version"] = np.array(keras_version)
    out["source"] = np.array("github.com/dmitryduev/braai models/d6_m7.weights.h5 (MIT, Duev et al. 2019)")
    dest = Path(__file__).resolve().parents[1] / "ztfsds" / "data" / f"braai_{MODEL}.npz"
    # float32 weights barely compress; savez_compressed still trims the zip overhead of the small arrays
    np.savez_compressed(dest, **out)
    print(dest, dest.stat().st_size, "bytes,", sum(v.size for v in out.values() if v.dtype == np.float32),
          "float32 parameters")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data/braai/models")
