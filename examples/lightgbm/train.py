"""Train a LightGBM CTR model on the Parquet training set `tributary backfill --out FILE.parquet` writes, evaluate it
on the later part, and export it to ONNX carrying Tributary's feature contract, ready for
`tributary models register`. Prints the evaluation as one JSON object on stdout.

    python train.py --training-set training.parquet --out lightgbm.onnx

The split is `tributary train`'s: rows ordered by impression time (file order within a timestamp), the latest
--eval-fraction held out, never splitting one timestamp. So the held-out rows are the ones the built-in model is
evaluated on.
"""

import argparse
import json
import math
import sys

import lightgbm as lgb
import numpy as np
import onnx
import onnxmltools
import pyarrow.parquet as pq
from onnxmltools.convert.common.data_types import FloatTensorType
from sklearn.metrics import log_loss, roc_auc_score


def split_by_time(time_ms, eval_fraction):
    order = np.argsort(time_ms, kind="stable")
    n = len(order)
    cut = math.floor(n * (1 - eval_fraction) + 0.5)
    while 0 < cut < n and time_ms[order[cut]] == time_ms[order[cut - 1]]:
        cut += 1
    if cut <= 0 or cut >= n:
        sys.exit(f"{n} rows cannot be split {1 - eval_fraction}/{eval_fraction} by time: need more rows")
    return order[:cut], order[cut:]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--training-set", required=True, help="Parquet file from `tributary backfill` (FILE.meta.json beside it)")
    p.add_argument("--out", required=True, help="ONNX model to write")
    p.add_argument("--eval-fraction", type=float, default=0.2)
    p.add_argument("--trees", type=int, default=100)
    p.add_argument("--learning-rate", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()

    with open(a.training_set + ".meta.json") as f:
        meta = json.load(f)
    features = meta["features"]  # the definitions' order: the model's input columns must follow it
    table = pq.read_table(a.training_set)
    x = np.column_stack([table.column(n).to_numpy().astype(np.float64) for n in features]).astype(np.float32)
    y = table.column("label").to_numpy().astype(np.int32)
    time_ms = table.column("event_time").cast("int64").to_numpy()
    train, held_out = split_by_time(time_ms, a.eval_fraction)
    if len(set(y[held_out])) < 2:
        sys.exit("the evaluation part needs both clicks and non-clicks: use more data or a larger --eval-fraction")

    # Small, well-populated leaves: clicks are rare (a few %), and deep trees on a few days of traffic overfit.
    params = dict(
        n_estimators=a.trees, learning_rate=a.learning_rate, num_leaves=7, min_child_samples=200,
        subsample=0.8, subsample_freq=1, colsample_bytree=0.8, random_state=a.seed, deterministic=True,
        force_row_wise=True, n_jobs=2, verbose=-1,
    )
    model = lgb.LGBMClassifier(**params)
    # float32 in training too: the ONNX model compares float32 inputs with the trees' thresholds.
    model.fit(x[train], y[train])
    p_eval = model.predict_proba(x[held_out])[:, 1]
    metrics = {
        "auc": float(roc_auc_score(y[held_out], p_eval)),
        "logloss": float(log_loss(y[held_out], np.clip(p_eval, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "rows": int(len(train)),
        "positives": int(y[train].sum()),
        "eval_rows": int(len(held_out)),
        "eval_positives": int(y[held_out].sum()),
        "eval_ctr": float(y[held_out].mean()),
        "mean_pctr": float(p_eval.mean()),
        "training_set": a.training_set,
    }
    iso = lambda ms: np.datetime_as_string(np.datetime64(int(ms), "ms"), unit="ms") + "Z"
    window = {"from": iso(time_ms[train].min()), "to": iso(time_ms[train].max())}

    # Input "features" [n, F] float32; zipmap off, so the outputs are "label" and "probabilities" [n, 2].
    onx = onnxmltools.convert_lightgbm(
        model,
        initial_types=[("features", FloatTensorType([None, len(features)]))],
        zipmap=False,
        target_opset=15,
    )
    contract = {
        "tributary.features": json.dumps(features),
        "tributary.definitions_version": meta["definitions_version"],
        "tributary.training_window": json.dumps(window),
        "tributary.metrics": json.dumps(metrics),
        "tributary.params": json.dumps({"model": "lightgbm", **{k: params[k] for k in ("n_estimators", "learning_rate", "num_leaves")}}),
    }
    onnx.helper.set_model_props(onx, contract)
    onnx.save_model(onx, a.out)
    print(json.dumps({**metrics, "model": a.out, "definitions_version": meta["definitions_version"]}))


if __name__ == "__main__":
    main()
