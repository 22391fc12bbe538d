"""JSON Schemas (2020-12, as OpenAPI 3.1 uses them) of the REST bodies, for the routes'
``RouteDoc``s. They describe what the handlers and codecs accept and answer; the codecs
(``v2_json``, ``tfserving_json``, ``evalstore.feedback``) stay the authority on validation.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

_STR: Schema = {"type": "string"}
_INT: Schema = {"type": "integer"}
_BOOL: Schema = {"type": "boolean"}
_NUM: Schema = {"type": "number"}
_STR_OR_NULL: Schema = {"type": ["string", "null"]}


def obj(required: tuple[str, ...] = (), description: str | None = None,
        additional: bool = True, **properties: Schema) -> Schema:
    """An object schema with these properties."""
    out: Schema = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(required)
    if not additional:
        out["additionalProperties"] = False
    if description:
        out["description"] = description
    return out


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


ERROR = obj(("error",), "Every error: its status is listed in docs/errors.md.",
            error={"type": "string", "description": "what failed and how to fix it"})

DATATYPE: Schema = {"type": "string", "enum": [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
    "FP32", "FP64", "BYTES"]}
PARAMETERS: Schema = {"type": "object", "description": "free-form parameters, echoed back"}

# -- KServe V2 ---------------------------------------------------------------------------
SERVER_METADATA = obj(("name", "version", "extensions"), name=_STR, version=_STR,
                      extensions=array(_STR))
LIVE = obj(("live",), live=_BOOL)
READY = obj(("ready",), ready=_BOOL)
MODEL_READY = obj(("name", "ready"), name=_STR, ready=_BOOL)
TENSOR_METADATA = obj(("name", "datatype", "shape"), name=_STR, datatype=DATATYPE,
                      shape=array({"type": "integer", "minimum": -1}))
VERSION_INFO = obj(version=_STR, state={"type": "string", "enum": [
    "LOADING", "READY", "UNLOADING", "UNAVAILABLE"]}, reason=_STR, runtime=_STR,
    sha256=_STR_OR_NULL, load_seconds=_NUM, warmup_seconds=_NUM)
MODEL_METADATA = obj(
    ("name", "versions", "platform", "inputs", "outputs"), name=_STR, versions=array(_STR),
    platform=_STR, inputs=array(TENSOR_METADATA), outputs=array(TENSOR_METADATA),
    ferry=obj(description="Ferry's addition: batch size, manifest error, per-version states",
              max_batch_size=_INT, error=_STR_OR_NULL, versions=array(VERSION_INFO)))

_TENSOR_DATA: Schema = {"description": "row-major values, nested or flat; absent when the "
                                       "tensor is sent as binary (parameters.binary_data_size)"}
INFER_REQUEST = obj(
    ("inputs",), id={"type": "string", "description": "names the request (see the "
                                                      "ferry-request-id header)"},
    parameters=obj(description="timeout (µs), binary_data_output; echoed back",
                   timeout={"type": "integer", "minimum": 1}, binary_data_output=_BOOL),
    inputs=array(obj(("name", "shape", "datatype"), name=_STR,
                     shape=array({"type": "integer", "minimum": 0}), datatype=DATATYPE,
                     parameters=PARAMETERS, data=_TENSOR_DATA)),
    outputs=array(obj(("name",), name=_STR, parameters=obj(binary_data=_BOOL))))
INFER_RESPONSE = obj(
    ("model_name", "model_version", "outputs"), model_name=_STR, model_version=_STR, id=_STR,
    parameters=PARAMETERS,
    outputs=array(obj(("name", "shape", "datatype"), name=_STR,
                      shape=array({"type": "integer", "minimum": 0}), datatype=DATATYPE,
                      parameters=PARAMETERS, data=_TENSOR_DATA)))

REPOSITORY_INDEX_REQUEST = obj(ready={"type": "boolean", "description": "READY versions only"})
REPOSITORY_INDEX = array(obj(("name", "version", "state", "reason"), name=_STR, version=_STR,
                             state=_STR, reason=_STR))
EMPTY = obj(additional=False, description="an empty object")
LOAD_REQUEST = obj(parameters=obj(additional=False, config={
    "type": "string", "description": "a configuration override: Triton's model configuration "
                                    "as a JSON string (docs/protocols.md)"}))

_DURATION = obj(("count", "ns"), count=_INT, ns=_INT)
_BATCH_STAT = obj(("batch_size",), batch_size=_INT, compute_input=_DURATION,
                  compute_infer=_DURATION, compute_output=_DURATION)
MODEL_STATS = obj(("model_stats",), model_stats=array(obj(
    ("name", "version", "last_inference", "inference_count", "execution_count",
     "inference_stats", "batch_stats"),
    name=_STR, version=_STR,
    last_inference={"type": "integer", "description": "ms since the epoch; 0 before any"},
    inference_count={"type": "integer", "description": "rows of successful requests"},
    execution_count={"type": "integer", "description": "batches that ran without error"},
    inference_stats=obj(success=_DURATION, fail=_DURATION, queue=_DURATION,
                        compute_input=_DURATION, compute_infer=_DURATION,
                        compute_output=_DURATION, cache_hit=_DURATION, cache_miss=_DURATION),
    batch_stats=array(_BATCH_STAT), memory_usage=array(obj()))))
_CONFIG_TENSOR = obj(("name", "data_type", "dims"), name=_STR, data_type={
    "type": "string", "description": "TYPE_FP32, TYPE_INT64, TYPE_STRING, ..."},
    dims=array({"type": "integer", "minimum": -1}))
MODEL_CONFIG = obj(
    ("name", "max_batch_size", "input", "output"), "Triton's ModelConfig as JSON",
    name=_STR, platform=_STR, backend=_STR, max_batch_size=_INT,
    version_policy=obj(latest=obj(num_versions=_INT), all=obj(),
                       specific=obj(versions=array(_INT))),
    input=array(_CONFIG_TENSOR), output=array(_CONFIG_TENSOR),
    dynamic_batching=obj(preferred_batch_size=array(_INT), max_queue_delay_microseconds=_INT,
                         default_queue_policy=obj(max_queue_size=_INT)),
    instance_group=array(obj(name=_STR, kind=_STR, count=_INT)))

# -- TF Serving --------------------------------------------------------------------------
TF_PREDICT_REQUEST: Schema = {
    **obj(signature_name={"type": "string", "description": "accepted and ignored"},
          instances=array({"description": "one row: the only input's value, or "
                                          "{input name: value}"}),
          inputs={"description": "columnar: a value, or {input name: value}"}),
    "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}]}
TF_PREDICT_RESPONSE: Schema = {
    **obj(predictions=array({"description": "one per row"}),
          outputs={"description": "a value, or {output name: value}"}),
    "oneOf": [{"required": ["predictions"]}, {"required": ["outputs"]}]}
TF_STATUS = obj(("model_version_status",), model_version_status=array(obj(
    version=_STR, state={"type": "string", "enum": ["AVAILABLE", "LOADING", "UNLOADING",
                                                    "END"]},
    status=obj(error_code=_STR, error_message=_STR))))
TF_METADATA = obj(("model_spec", "metadata"), model_spec=obj(name=_STR, version=_STR),
                  metadata=obj(signature_def=obj(signature_def=obj(serving_default=obj(
                      inputs=array(TENSOR_METADATA), outputs=array(TENSOR_METADATA))))))

# -- the server --------------------------------------------------------------------------
OPENAPI = obj(("openapi", "info", "paths"), "this document", openapi=_STR, info=obj(),
              paths=obj())
TEXT: Schema = {"type": "string"}

# -- /ferry/v1 ---------------------------------------------------------------------------
_FEEDBACK_ITEM = obj(("request_id",), request_id=_STR,
                     label={"description": "one value, or one per row of the request"},
                     reward={"type": "number", "description": "a finite number"})
FEEDBACK_REQUEST: Schema = {"description": "one item, or {\"feedback\": [items]}; each needs "
                                           "a label or a reward",
                            "oneOf": [_FEEDBACK_ITEM, obj(("feedback",), feedback={
                                **array(_FEEDBACK_ITEM), "minItems": 1})]}
FEEDBACK_RESULT = obj(("accepted", "duplicates"), accepted=_INT, duplicates={
    "type": "integer", "description": "ids that already had feedback (the newest wins)"})
MONITOR_REPORT = obj(
    ("model", "window", "traffic", "drift", "quality", "performance"),
    "the monitoring report (docs/monitoring.md)", model=_STR,
    version={"type": ["integer", "null"]},
    window=obj(start=_NUM, end=_NUM, seconds=_NUM, rows=_INT, requests=_INT),
    traffic=obj(requests=_INT, errors=_INT, latency=obj()), drift=obj(), quality=obj(),
    performance=obj(), note=_STR, config_warnings=array(_STR))
REFERENCE_RESULT = obj(("model", "version", "rows", "features"), model=_STR, version=_INT,
                       rows=_INT, source=_STR,
                       features=obj(description="a summary per feature"))
STORE_STATUS = obj(("up", "buffered"), url=_STR, up=_BOOL, error=_STR_OR_NULL, buffered=_INT,
                   written=_INT, dropped=_INT, spill_bytes=_INT, spill_dir=_STR)
FLUSH_RESULT: Schema = {**STORE_STATUS, "required": ["flushed", "up", "buffered"],
                        "properties": {"flushed": _BOOL, **STORE_STATUS["properties"]}}
PREDICTION = obj(("table", "key", "prediction"), table=_STR, key=obj(),
                 run_id=_STR_OR_NULL, model_version={"type": ["integer", "string", "null"]},
                 scored_at=_STR_OR_NULL, age_s={"type": ["number", "null"]},
                 prediction=obj(description="the row's columns"))

# -- system shared memory (Triton's extension) -------------------------------------------
_SHM_FIELDS = {"key": {"type": "string", "description": "POSIX shared memory name, "
                                                        "e.g. /in0 (/dev/shm/in0)"},
               "offset": {"type": "integer", "minimum": 0,
                          "description": "bytes into the object where the region starts"},
               "byte_size": {"type": "integer", "minimum": 1,
                             "description": "the region's size in bytes"}}
SHM_REGISTER_REQUEST = obj(("key", "byte_size"), **_SHM_FIELDS)
SHM_STATUS = array(obj(("name", "key", "offset", "byte_size"), name=_STR, **_SHM_FIELDS))

# -- endpoints and rollouts (/ferry/v1/endpoints) ------------------------------------------
POLICY = {"oneOf": [
    obj(("kind",), "every request to one version (null or \"latest\": the latest ready one)",
        kind={"const": "pin"}, version={"type": ["integer", "string", "null"]}),
    obj(("kind", "weights"), "weighted traffic, optionally sticky by a request header",
        kind={"const": "split"},
        weights={"type": "object", "additionalProperties": _NUM,
                 "description": "version -> weight (not negative, not all zero; normalised)"},
        sticky_header=_STR_OR_NULL),
]}
POLICY_REQUEST: Schema = {**POLICY, "description": "a policy, optionally with \"reason\": a "
                                                    "note kept in the event"}
ENDPOINT = obj(("model", "policy", "stable", "revision", "live_versions", "shares"),
               model=_STR, policy=POLICY, describe=_STR, stable=POLICY, revision=_INT,
               live_versions=array(_INT), latest={"type": ["integer", "null"]},
               shares={"type": "object", "additionalProperties": _NUM,
                       "description": "version -> share of the traffic now"},
               notes=array(_STR))
ENDPOINTS = array(ENDPOINT)
ENDPOINT_EVENTS = array(obj(("id", "ts", "action", "actor"), id=_INT, ts=_NUM,
                            action=_STR, policy={}, previous={}, reason=_STR_OR_NULL,
                            actor=_STR, client=_STR_OR_NULL, notes=array(_STR)))
ROLLBACK_REQUEST = obj(reason=_STR)
