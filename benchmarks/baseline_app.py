"""The serving baseline: a plain FastAPI app (one uvicorn worker) doing what a rayline replica
does per request — the same validation, the same lookups (the model's snapshot: joins and
counts), the same FeatureSpec transform, the same forward pass — without Ray. Run by benchmarks/serve.py with RAYLINE_ROOT, RAYLINE_MODEL, RAYLINE_VERSION set."""

import os

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from rayline.data.lookup_store import snapshot_of
from rayline.registry import Registry
from rayline.serve.schema import RequestError, parse_body, validate_instances
from rayline.storage import Storage

torch.set_num_threads(1)
registry = Registry(Storage(os.environ["RAYLINE_ROOT"]), os.environ["RAYLINE_MODEL"])
version, model = registry.load(os.environ["RAYLINE_VERSION"])
model.lookups = snapshot_of(registry, version, model.spec)
app = FastAPI()


@app.post("/predict")
async def predict(request: Request):
    try:
        table = validate_instances(parse_body(await request.body(), 1 << 20), model.contract, 1024)
    except RequestError as e:
        return JSONResponse({"error": e.reason, "message": e.message}, e.status)
    _, preds = model.predict_table(table)  # lookups, transform, forward
    return {"predictions": [{"probability": float(p), "label": int(p >= 0.5)} for p in preds], "model_version": version}
