"""Runtimes against tiny real models built in temporary folders, and the runtime registry."""

from __future__ import annotations

import textwrap
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from ferry.errors import ModelError, ModelLoadError
from ferry.manifest import ModelManifest, parse_manifest
from ferry.runtimes import registry
from ferry.runtimes.base import Runtime
from ferry.runtimes.gbdt import LightGBMRuntime, XGBoostRuntime
from ferry.runtimes.onnx import OnnxRuntime
from ferry.scheduler.tensors import numpy_input
from ferry.runtimes.python import PythonRuntime
from ferry.runtimes.sklearn import SklearnRuntime
from ferry.types import Signature, TensorSpec

X_IRIS, Y_IRIS = load_iris(return_X_y=True)
X_DIAB, Y_DIAB = load_diabetes(return_X_y=True)


def version(tmp_path: Path, name: str = "1") -> Path:
    path = tmp_path / "model" / name
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="module")
def iris_classifier() -> LogisticRegression:
    return LogisticRegression(max_iter=2000).fit(X_IRIS, Y_IRIS)


# -- ONNX ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory, iris_classifier: LogisticRegression
             ) -> Path:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(iris_classifier,
                          initial_types=[("float_input", FloatTensorType([None, 4]))])
    path = tmp_path_factory.mktemp("onnx") / "1"
    path.mkdir()
    (path / "model.onnx").write_bytes(onx.SerializeToString())
    return path


def test_onnx_signature_from_graph(onnx_dir: Path) -> None:
    rt = OnnxRuntime(ModelManifest())
    rt.load(onnx_dir)
    sig = rt.signature()
    assert sig.inputs == (TensorSpec("float_input", "FP32", (-1, 4)),)
    # the ZipMap probabilities (a sequence of maps) are not a tensor and are left out
    assert [o.name for o in sig.outputs] == ["output_label"]
    assert sig.outputs[0].datatype == "INT64" and sig.outputs[0].shape == (-1,)
    rt.unload()


def test_onnx_predict_matches_sklearn(onnx_dir: Path, iris_classifier: LogisticRegression
                                      ) -> None:
    rt = OnnxRuntime(ModelManifest())
    rt.load(onnx_dir)
    x = X_IRIS.astype(np.float32)
    out = rt.predict({"float_input": x})
    assert list(out) == ["output_label"]
    np.testing.assert_array_equal(out["output_label"], iris_classifier.predict(x))
    rt.unload()


def test_onnx_declared_signature_with_matching_names(onnx_dir: Path) -> None:
    manifest = parse_manifest({
        "threads": 2,
        "inputs": [{"name": "float_input", "datatype": "FP32", "shape": [-1, 4],
                    "allow_nan": False}],
        "outputs": [{"name": "output_label", "datatype": "INT64", "shape": [-1]}]})
    rt = OnnxRuntime(manifest)
    rt.load(onnx_dir)
    assert rt.signature().inputs[0].allow_nan is False
    out = rt.predict({"float_input": X_IRIS[:3].astype(np.float32)})
    assert out["output_label"].shape == (3,)


def test_onnx_partial_manifest_takes_the_rest_from_the_graph(onnx_dir: Path) -> None:
    rt = OnnxRuntime(parse_manifest({
        "inputs": [{"name": "float_input", "datatype": "FP32", "shape": [-1, 4],
                    "allow_nan": False}]}))
    rt.load(onnx_dir)
    sig = rt.signature()
    assert sig.inputs == (TensorSpec("float_input", "FP32", (-1, 4), allow_nan=False),)
    assert [o.name for o in sig.outputs] == ["output_label"]  # from the graph


def test_onnx_partial_manifest_with_wrong_name(onnx_dir: Path) -> None:
    rt = OnnxRuntime(parse_manifest({
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]}))
    with pytest.raises(ModelLoadError, match="declares output 'probabilities'"):
        rt.load(onnx_dir)


@pytest.mark.parametrize("kind", ["input", "output"])
def test_onnx_declared_wrong_name_is_a_load_error(onnx_dir: Path, kind: str) -> None:
    inputs = [{"name": "features" if kind == "input" else "float_input", "datatype": "FP32",
               "shape": [-1, 4]}]
    outputs = [{"name": "label" if kind == "output" else "output_label", "datatype": "INT64",
                "shape": [-1]}]
    rt = OnnxRuntime(parse_manifest({"inputs": inputs, "outputs": outputs}))
    with pytest.raises(ModelLoadError) as info:
        rt.load(onnx_dir)
    wrong = "features" if kind == "input" else "label"
    assert f"declares {kind} {wrong!r}" in info.value.message
    assert str(onnx_dir) in info.value.message


def test_onnx_corrupt_file_is_a_load_error(tmp_path: Path) -> None:
    path = version(tmp_path)
    (path / "model.onnx").write_bytes(b"this is not an onnx graph")
    with pytest.raises(ModelLoadError) as info:
        OnnxRuntime(ModelManifest()).load(path)
    assert str(path / "model.onnx") in info.value.message
    assert "onnxruntime could not load it" in info.value.message


def test_onnx_missing_artifact_is_a_load_error(tmp_path: Path) -> None:
    path = version(tmp_path)
    with pytest.raises(ModelLoadError, match="no model.onnx for runtime 'onnx'"):
        OnnxRuntime(ModelManifest()).load(path)


def test_numpy_input_fits_a_spec() -> None:
    a = numpy_input(TensorSpec("x", "FP32", (-1, 4)))
    assert a.shape == (1, 4) and a.dtype == np.float32 and not a.any()
    s = numpy_input(TensorSpec("s", "BYTES", (-1,)))
    assert s.dtype == object and s.tolist() == [b""]


# -- scikit-learn ------------------------------------------------------------------------

def test_sklearn_classifier(tmp_path: Path, iris_classifier: LogisticRegression) -> None:
    path = version(tmp_path)
    joblib.dump(iris_classifier, path / "model.joblib")
    rt = SklearnRuntime(ModelManifest())
    assert rt.executes_code_on_load and rt.thread_safe
    rt.load(path)
    sig = rt.signature()
    assert sig.inputs == (TensorSpec("input", "FP64", (-1, 4)),)
    assert sig.outputs == (TensorSpec("label", "INT64", (-1,)),
                           TensorSpec("probabilities", "FP64", (-1, 3)))
    out = rt.predict({"input": X_IRIS})
    assert out["label"].dtype == np.int64
    np.testing.assert_array_equal(out["label"], iris_classifier.predict(X_IRIS))
    np.testing.assert_allclose(out["probabilities"], iris_classifier.predict_proba(X_IRIS))


def test_sklearn_classifier_with_string_classes(tmp_path: Path) -> None:
    names = np.array(["setosa", "versicolor", "virginica"])[Y_IRIS]
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X_IRIS, names)
    path = version(tmp_path)
    joblib.dump(model, path / "model.pkl")
    rt = SklearnRuntime(ModelManifest())
    rt.load(path)
    assert rt.signature().outputs[0] == TensorSpec("label", "BYTES", (-1,))
    out = rt.predict({"input": X_IRIS[:10]})
    assert out["label"].tolist() == model.predict(X_IRIS[:10]).tolist()


def test_sklearn_regressor(tmp_path: Path) -> None:
    model = LinearRegression().fit(X_DIAB, Y_DIAB)
    path = version(tmp_path)
    joblib.dump(model, path / "model.joblib")
    rt = SklearnRuntime(ModelManifest())
    rt.load(path)
    sig = rt.signature()
    assert sig.inputs == (TensorSpec("input", "FP64", (-1, 10)),)
    assert sig.outputs == (TensorSpec("predictions", "FP64", (-1,)),)
    out = rt.predict({"input": X_DIAB[:20]})
    np.testing.assert_allclose(out["predictions"], model.predict(X_DIAB[:20]))


def test_sklearn_declared_signature_names_are_used(tmp_path: Path,
                                                    iris_classifier: LogisticRegression
                                                    ) -> None:
    path = version(tmp_path)
    joblib.dump(iris_classifier, path / "model.joblib")
    rt = SklearnRuntime(parse_manifest({
        "inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [{"name": "species", "datatype": "INT64", "shape": [-1]}]}))
    rt.load(path)
    out = rt.predict({"features": X_IRIS[:5]})
    assert list(out) == ["species"]
    np.testing.assert_array_equal(out["species"], iris_classifier.predict(X_IRIS[:5]))


def test_sklearn_partial_manifest_keeps_inferred_outputs(tmp_path: Path,
                                                         iris_classifier: LogisticRegression
                                                         ) -> None:
    path = version(tmp_path)
    joblib.dump(iris_classifier, path / "model.joblib")
    rt = SklearnRuntime(parse_manifest({
        "inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, 4]}]}))
    rt.load(path)
    sig = rt.signature()
    assert sig.inputs == (TensorSpec("features", "FP64", (-1, 4)),)
    assert [o.name for o in sig.outputs] == ["label", "probabilities"]
    out = rt.predict({"features": X_IRIS[:4]})
    np.testing.assert_allclose(out["probabilities"], iris_classifier.predict_proba(X_IRIS[:4]))


def test_sklearn_object_without_predict(tmp_path: Path) -> None:
    path = version(tmp_path)
    joblib.dump({"not": "a model"}, path / "model.joblib")
    with pytest.raises(ModelLoadError, match="holds a dict, which has no predict"):
        SklearnRuntime(ModelManifest()).load(path)


def test_sklearn_corrupt_pickle(tmp_path: Path) -> None:
    path = version(tmp_path)
    (path / "model.joblib").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="could not unpickle"):
        SklearnRuntime(ModelManifest()).load(path)


# -- gradient boosting -------------------------------------------------------------------

def test_xgboost_binary(tmp_path: Path) -> None:
    import xgboost

    y = (Y_IRIS > 0).astype(int)
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
                            xgboost.DMatrix(X_IRIS, label=y), num_boost_round=5)
    path = version(tmp_path)
    booster.save_model(path / "model.json")
    rt = XGBoostRuntime(ModelManifest())
    rt.load(path)
    assert rt.signature() == Signature((TensorSpec("input", "FP32", (-1, 4)),),
                                       (TensorSpec("predictions", "FP32", (-1,)),))
    x = X_IRIS.astype(np.float32)
    out = rt.predict({"input": x})["predictions"]
    assert out.dtype == np.float32 and out.shape == (150,)
    np.testing.assert_allclose(out, booster.predict(xgboost.DMatrix(x)), rtol=1e-6)


def test_xgboost_multiclass(tmp_path: Path) -> None:
    import xgboost

    booster = xgboost.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 2,
                             "nthread": 1},
                            xgboost.DMatrix(X_IRIS, label=Y_IRIS), num_boost_round=5)
    path = version(tmp_path)
    booster.save_model(path / "model.json")
    rt = XGBoostRuntime(ModelManifest())
    rt.load(path)
    assert rt.signature().outputs == (TensorSpec("predictions", "FP32", (-1, 3)),)
    x = X_IRIS[::7].astype(np.float32)
    np.testing.assert_allclose(rt.predict({"input": x})["predictions"],
                               booster.predict(xgboost.DMatrix(x)), rtol=1e-6)


def test_gbdt_partial_manifest_renames_the_output(tmp_path: Path) -> None:
    import lightgbm

    data = lightgbm.Dataset(X_DIAB, label=Y_DIAB, params={"verbose": -1})
    booster = lightgbm.train({"objective": "regression", "num_leaves": 4, "verbose": -1,
                              "num_threads": 1}, data, num_boost_round=3)
    path = version(tmp_path)
    booster.save_model(str(path / "model.txt"))
    rt = LightGBMRuntime(parse_manifest({
        "outputs": [{"name": "progression", "datatype": "FP32", "shape": [-1]}]}))
    rt.load(path)
    assert rt.signature().inputs == (TensorSpec("input", "FP32", (-1, 10)),)
    x = X_DIAB[:3].astype(np.float32)
    out = rt.predict({"input": x})
    assert list(out) == ["progression"]
    np.testing.assert_allclose(out["progression"], booster.predict(x), rtol=1e-5)


def test_xgboost_corrupt_file(tmp_path: Path) -> None:
    path = version(tmp_path)
    (path / "model.json").write_text("{\"not\": \"a booster\"}")
    with pytest.raises(ModelLoadError, match="xgboost could not load it"):
        XGBoostRuntime(ModelManifest()).load(path)


def test_lightgbm_regression(tmp_path: Path) -> None:
    import lightgbm

    data = lightgbm.Dataset(X_DIAB, label=Y_DIAB, params={"verbose": -1})
    booster = lightgbm.train({"objective": "regression", "num_leaves": 4, "verbose": -1,
                              "num_threads": 1}, data, num_boost_round=5)
    path = version(tmp_path)
    booster.save_model(str(path / "model.txt"))
    rt = LightGBMRuntime(ModelManifest())
    rt.load(path)
    assert rt.signature() == Signature((TensorSpec("input", "FP32", (-1, 10)),),
                                       (TensorSpec("predictions", "FP32", (-1,)),))
    x = X_DIAB[:30].astype(np.float32)
    out = rt.predict({"input": x})["predictions"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, booster.predict(x), rtol=1e-5)


def test_lightgbm_multiclass(tmp_path: Path) -> None:
    import lightgbm

    data = lightgbm.Dataset(X_IRIS, label=Y_IRIS, params={"verbose": -1})
    booster = lightgbm.train({"objective": "multiclass", "num_class": 3, "num_leaves": 4,
                              "verbose": -1, "num_threads": 1}, data, num_boost_round=5)
    path = version(tmp_path)
    booster.save_model(str(path / "model.txt"))
    rt = LightGBMRuntime(ModelManifest())
    rt.load(path)
    assert rt.signature().outputs == (TensorSpec("predictions", "FP32", (-1, 3)),)
    x = X_IRIS.astype(np.float32)
    np.testing.assert_allclose(rt.predict({"input": x})["predictions"], booster.predict(x),
                               rtol=1e-5)


def test_lightgbm_corrupt_file(tmp_path: Path) -> None:
    path = version(tmp_path)
    (path / "model.txt").write_text("not a lightgbm model\n")
    with pytest.raises(ModelLoadError, match="lightgbm could not load it"):
        LightGBMRuntime(ModelManifest()).load(path)


# -- python ------------------------------------------------------------------------------

DECLARED = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}]}

def python_model(tmp_path: Path, code: str) -> Path:
    path = version(tmp_path)
    (path / "model.py").write_text(textwrap.dedent(code))
    return path


def test_python_single_class_is_found(tmp_path: Path) -> None:
    path = python_model(tmp_path, """
        import numpy as np

        HELPER = 3

        def helper():
            return 1

        class NotAPredictor:
            def load(self, d):
                pass

        class Doubler:
            def load(self, version_dir):
                self.dir = version_dir
            def predict(self, inputs):
                return {"y": inputs["x"] * 2, "as_list": [1, 2]}
    """)
    rt = PythonRuntime(parse_manifest(DECLARED))
    assert rt.thread_safe is False
    rt.load(path)
    assert rt.signature().inputs == (TensorSpec("x", "FP32", (-1,)),)
    out = rt.predict({"x": np.array([1.0, 2.5], dtype=np.float32)})
    np.testing.assert_array_equal(out["y"], [2.0, 5.0])
    assert isinstance(out["as_list"], np.ndarray)  # results become arrays


def test_python_class_named_by_parameters(tmp_path: Path) -> None:
    path = python_model(tmp_path, """
        class First:
            def load(self, d):
                pass
            def predict(self, inputs):
                return {"y": inputs["x"] + 1}

        class Second:
            def load(self, d):
                pass
            def predict(self, inputs):
                return {"y": inputs["x"] + 2}
    """)
    rt = PythonRuntime(parse_manifest({**DECLARED, "parameters": {"predictor": "Second"}}))
    rt.load(path)
    np.testing.assert_array_equal(rt.predict({"x": np.zeros(2)})["y"], [2, 2])


def test_python_two_classes_without_a_name_is_an_error(tmp_path: Path) -> None:
    path = python_model(tmp_path, """
        class A:
            def load(self, d): pass
            def predict(self, inputs): return {}
        class B:
            def load(self, d): pass
            def predict(self, inputs): return {}
    """)
    with pytest.raises(ModelLoadError) as info:
        PythonRuntime(parse_manifest(DECLARED)).load(path)
    assert "expected one class with load() and predict()" in info.value.message
    assert "['A', 'B']" in info.value.message
    assert "predictor" in info.value.message
    assert str(path / "model.py") in info.value.message


def test_python_no_class_is_an_error(tmp_path: Path) -> None:
    path = python_model(tmp_path, "x = 1\n")
    with pytest.raises(ModelLoadError, match=r"found \[\]"):
        PythonRuntime(parse_manifest(DECLARED)).load(path)


def test_python_named_class_missing(tmp_path: Path) -> None:
    path = python_model(tmp_path, """
        VALUE = 3
        class A:
            def load(self, d): pass
            def predict(self, inputs): return {}
    """)
    for wanted in ("Missing", "VALUE"):
        rt = PythonRuntime(parse_manifest({**DECLARED, "parameters": {"predictor": wanted}}))
        with pytest.raises(ModelLoadError, match=f"no class '{wanted}'"):
            rt.load(path)


def test_python_missing_signature_is_an_error(tmp_path: Path) -> None:
    path = python_model(tmp_path, """
        class A:
            def load(self, d): pass
            def predict(self, inputs): return {}
    """)
    with pytest.raises(ModelLoadError, match="declare inputs and outputs in model.yaml .*A"):
        PythonRuntime(ModelManifest()).load(path)
    # declaring only the inputs is not enough either
    only_inputs = parse_manifest({"inputs": DECLARED["inputs"]})
    with pytest.raises(ModelLoadError, match="declare inputs and outputs"):
        PythonRuntime(only_inputs).load(path)


def test_python_signature_method(tmp_path: Path) -> None:
    path = python_model(tmp_path, """
        from ferry import Signature, TensorSpec

        class A:
            def load(self, d): pass
            def predict(self, inputs): return {"y": inputs["x"]}
            def signature(self):
                return Signature((TensorSpec("x", "INT64", (-1, 2)),),
                                 (TensorSpec("y", "INT64", (-1, 2)),))
    """)
    rt = PythonRuntime(ModelManifest())
    rt.load(path)
    assert rt.signature().inputs == (TensorSpec("x", "INT64", (-1, 2)),)


def test_python_manifest_side_overrides_signature_method(tmp_path: Path) -> None:
    path = python_model(tmp_path, """
        from ferry import Signature, TensorSpec

        class A:
            def load(self, d): pass
            def predict(self, inputs): return {"y": inputs["x"]}
            def signature(self):
                return Signature((TensorSpec("x", "INT64", (-1, 2)),),
                                 (TensorSpec("y", "INT64", (-1, 2)),))
    """)
    rt = PythonRuntime(parse_manifest({
        "inputs": [{"name": "x", "datatype": "INT64", "shape": [-1, 2], "allow_nan": False}]}))
    rt.load(path)
    assert rt.signature().inputs[0].allow_nan is False
    assert rt.signature().outputs == (TensorSpec("y", "INT64", (-1, 2)),)


def test_python_signature_method_returning_junk(tmp_path: Path) -> None:
    path = python_model(tmp_path, """
        class A:
            def load(self, d): pass
            def predict(self, inputs): return {}
            def signature(self): return {"inputs": []}
    """)
    with pytest.raises(ModelLoadError, match="declare inputs and outputs"):
        PythonRuntime(ModelManifest()).load(path)


@pytest.mark.parametrize("code, detail", [
    ("import ferry_no_such_module_xyz\n", "ModuleNotFoundError"),
    ("def broken(:\n", "SyntaxError"),
    ("raise RuntimeError('boom at import')\n", "boom at import"),
])
def test_python_import_error_names_the_file(tmp_path: Path, code: str, detail: str) -> None:
    path = python_model(tmp_path, code)
    with pytest.raises(ModelLoadError) as info:
        PythonRuntime(parse_manifest(DECLARED)).load(path)
    assert str(path / "model.py") in info.value.message
    assert "import failed" in info.value.message and detail in info.value.message


def test_python_predict_returning_non_dict_is_a_model_error(tmp_path: Path) -> None:
    path = python_model(tmp_path, """
        class A:
            def load(self, d): pass
            def predict(self, inputs): return [inputs["x"]]
    """)
    rt = PythonRuntime(parse_manifest(DECLARED))
    rt.load(path)
    with pytest.raises(ModelError, match="predictor returned list, expected a dict"):
        rt.predict({"x": np.zeros(1)})


def test_python_unload_calls_the_predictor(tmp_path: Path) -> None:
    marker = tmp_path / "unloaded.txt"
    path = python_model(tmp_path, f"""
        from pathlib import Path

        class A:
            def load(self, d): pass
            def predict(self, inputs): return {{}}
            def unload(self):
                Path({str(marker)!r}).write_text("yes")
    """)
    rt = PythonRuntime(parse_manifest(DECLARED))
    rt.load(path)
    rt.unload()
    assert marker.read_text() == "yes"


def test_python_two_loads_are_independent(tmp_path: Path) -> None:
    path = python_model(tmp_path, """
        class A:
            def load(self, d):
                self.calls = 0
            def predict(self, inputs):
                self.calls += 1
                return {"y": inputs["x"] * self.calls}
    """)
    a, b = PythonRuntime(parse_manifest(DECLARED)), PythonRuntime(parse_manifest(DECLARED))
    a.load(path)
    b.load(path)
    x = np.ones(1)
    a.predict({"x": x})
    assert a.predict({"x": x})["y"].tolist() == [2.0]
    assert b.predict({"x": x})["y"].tolist() == [1.0]


def test_python_model_may_use_dataclasses(tmp_path: Path) -> None:
    path = python_model(tmp_path, """
        from __future__ import annotations
        from dataclasses import dataclass

        @dataclass
        class Config:
            scale: float = 2.0

        class A:
            def load(self, d):
                self.config = Config()
            def predict(self, inputs):
                return {"y": inputs["x"] * self.config.scale}
    """)
    rt = PythonRuntime(parse_manifest(DECLARED))
    rt.load(path)
    assert rt.predict({"x": np.ones(1)})["y"].tolist() == [2.0]


# -- registry --------------------------------------------------------------------------------

@pytest.mark.parametrize("artifact, runtime", [
    ("model.onnx", "onnx"), ("model.joblib", "sklearn"), ("model.pkl", "sklearn"),
    ("model.ubj", "xgboost"), ("model.xgb", "xgboost"), ("model.json", "xgboost"),
    ("model.txt", "lightgbm"), ("model.py", "python"),
])
def test_guess_runtime_by_artifact(tmp_path: Path, artifact: str, runtime: str) -> None:
    (tmp_path / artifact).write_bytes(b"")
    assert registry.guess_runtime(tmp_path) == runtime
    cls = registry.runtime_class(runtime)
    assert issubclass(cls, Runtime) and cls.name == runtime
    assert artifact in cls.artifacts


def test_guess_runtime_prefers_onnx(tmp_path: Path) -> None:
    for name in ("model.py", "model.txt", "model.onnx"):
        (tmp_path / name).write_bytes(b"")
    assert registry.guess_runtime(tmp_path) == "onnx"


def test_guess_runtime_without_artifact(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("hi")
    with pytest.raises(ModelLoadError) as info:
        registry.guess_runtime(tmp_path)
    assert str(tmp_path) in info.value.message
    assert "model.onnx" in info.value.message and "model.py" in info.value.message
    assert "runtime:" in info.value.message


def test_unknown_runtime_lists_installed_ones() -> None:
    with pytest.raises(ModelLoadError) as info:
        registry.runtime_class("tensorflow")
    message = info.value.message
    assert "unknown runtime 'tensorflow'" in message
    for name in ("lightgbm", "onnx", "python", "sklearn", "xgboost"):
        assert name in message


def test_registry_names_include_builtins() -> None:
    assert {"onnx", "sklearn", "xgboost", "lightgbm", "python"} <= set(registry.names())
    assert registry.names() == sorted(registry.names())


def test_builtin_classes() -> None:
    assert registry.runtime_class("onnx") is OnnxRuntime
    assert registry.runtime_class("sklearn") is SklearnRuntime
    assert registry.runtime_class("xgboost") is XGBoostRuntime
    assert registry.runtime_class("lightgbm") is LightGBMRuntime
    assert registry.runtime_class("python") is PythonRuntime
    assert SklearnRuntime.executes_code_on_load
    assert not OnnxRuntime.executes_code_on_load and not PythonRuntime.thread_safe


def test_sklearn_bytes_input_reaches_the_estimator_as_str(tmp_path: Path) -> None:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    x = np.array([["red", "s"], ["blue", "l"], ["caf\u00e9", "s"], ["red", "l"]] * 5,
                 dtype=object)
    y = np.array([0, 1, 2, 0] * 5)
    model = make_pipeline(OneHotEncoder(), LogisticRegression(max_iter=500)).fit(x, y)
    path = version(tmp_path)
    joblib.dump(model, path / "model.joblib")
    rt = SklearnRuntime(parse_manifest({"inputs": [
        {"name": "input", "datatype": "BYTES", "shape": [-1, 2]}]}))
    rt.load(path)
    assert rt.signature().inputs[0].text
    sent = np.empty((4, 2), dtype=object)  # as the protocols decode them: bytes
    sent[:] = [[v.encode() for v in row] for row in x[:4].tolist()]
    out = rt.predict({"input": sent})
    assert out["label"].tolist() == model.predict(x[:4]).tolist()


def test_boosters_refuse_a_bytes_input(tmp_path: Path) -> None:
    import xgboost

    path = version(tmp_path)
    booster = xgboost.train({"objective": "reg:squarederror", "nthread": 1},
                            xgboost.DMatrix(X_IRIS, label=Y_IRIS), num_boost_round=2)
    booster.save_model(str(path / "model.json"))
    rt = XGBoostRuntime(parse_manifest({"inputs": [
        {"name": "input", "datatype": "BYTES", "shape": [-1, 4]}]}))
    with pytest.raises(ModelLoadError, match="input 'input' as BYTES, but xgboost boosters "
                                             "take numbers only"):
        rt.load(path)
