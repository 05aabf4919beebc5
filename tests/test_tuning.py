"""Autotuning of sparse programs: the engine and the per-layer modes are chosen by timing on this machine, cached
per program and machine, and never change the outputs; a damaged or unwritable cache costs one warning line."""

import json
import logging

import numpy as np
import pytest

from mayo_lite.sparse import SparseGatedModel, latency, tuning
from tests.test_sparse import assert_same_outputs, gated_model

SHAPE = (28, 28, 1)


@pytest.fixture(autouse=True)
def no_settling(monkeypatch):
    """The pause between timed passes is for fair figures; what is tested here is what is done with them."""
    monkeypatch.setattr(latency, "SETTLE_SECONDS", 0.0)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "tuning.json"
    monkeypatch.setenv("MAYO_LITE_TUNING_CACHE", str(path))
    return path


@pytest.fixture(scope="module")
def model():
    return gated_model("models/gate/cifarnet_slim.yaml", SHAPE, 0.5)


def test_the_first_program_is_timed_and_the_second_reads_the_choice(cache, model, monkeypatch):
    first = SparseGatedModel(model)
    assert first.engine == "auto"
    assert first.tune() in ("native", "xla") and first.from_cache is False
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["engine"] == first.engine and "native" in entry["ms"]
    assert entry["engine"] == min(entry["ms"], key=entry["ms"].get).split(":")[0]  # the fastest, as measured
    # The TensorFlow program's gather cost: the first guess, gathering everywhere, every channel on small maps.
    assert {name for name in entry["ms"] if name != "native"} == {"xla:55.0", "xla:0.0", "xla:inf"}
    assert entry["ms"][f"xla:{entry['gather_cost']}"] == min(
        value for name, value in entry["ms"].items() if name != "native")
    assert set(entry["modes"]) == {f"conv{i}" for i in range(8)} and set(entry["modes"].values()) <= {
        "gather", "every"}

    def no_timing(*arguments):
        raise AssertionError("timed again")
    monkeypatch.setattr(tuning, "_median_seconds", no_timing)
    monkeypatch.setattr(tuning, "compare_latency", no_timing)
    second = SparseGatedModel(model)
    assert second.tune() == first.engine and second.from_cache is True
    assert second.modes == first.modes
    assert [operation.mode for operation in second.native.operations if getattr(operation, "gated", False)] == [
        entry["modes"][f"conv{i}"] for i in range(8)]
    assert_same_outputs(model, second, SHAPE)


def test_another_density_is_another_program(cache, model):
    SparseGatedModel(model).tune()
    SparseGatedModel(gated_model("models/gate/cifarnet_slim.yaml", SHAPE, 0.3)).tune()
    assert len(json.loads(cache.read_text())) == 2


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_a_damaged_cache_is_ignored_in_one_line_and_written_afresh(cache, model, content, caplog):
    cache.parent.mkdir(parents=True)
    cache.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="mayo_lite"):
        program = SparseGatedModel(model)
        program.tune()
    (record,) = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert record.getMessage().startswith(f"sparse: ignoring the tuning cache {cache} (")
    assert "\n" not in record.getMessage()
    assert len(json.loads(cache.read_text())) == 1
    assert_same_outputs(model, program, SHAPE)


def test_a_cache_that_cannot_be_written_still_tunes(tmp_path, monkeypatch, model, caplog):
    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setenv("MAYO_LITE_TUNING_CACHE", str(tmp_path / "file" / "tuning.json"))
    with caplog.at_level(logging.WARNING, logger="mayo_lite"):
        program = SparseGatedModel(model)
        assert program.tune() in ("native", "xla")
    assert any("could not write the tuning cache" in record.getMessage() for record in caplog.records)
    assert_same_outputs(model, program, SHAPE)


def test_a_cached_choice_changes_the_time_never_the_outputs(cache, model):
    """Whatever the cache says (every engine, every mode), the outputs are the Keras model's."""
    reference = SparseGatedModel(model)
    key = tuning.program_key(reference)
    for engine in ("native", "xla"):
        for mode in ("gather", "every"):
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({key: {"engine": engine, "modes": {f"conv{i}": mode for i in range(8)}}}))
            program = SparseGatedModel(model)
            assert program.tune() == engine and program.from_cache
            assert_same_outputs(model, program, SHAPE)


def test_a_model_the_native_runtime_cannot_run_still_tunes_its_tensorflow_program(cache):
    """MobileNet has small maps: which layers compute every channel is measured, not taken from the constant."""
    mobile = gated_model("models/gate/mobilenet.yaml", (64, 64, 3), 0.5)
    program = SparseGatedModel(mobile)
    assert program.native is None and program.tune() == "xla" and not program.from_cache
    (entry,) = json.loads(cache.read_text()).values()
    assert set(entry["ms"]) == {"xla:55.0", "xla:0.0", "xla:inf"} and entry["modes"] == {}
    assert entry["ms"][f"xla:{entry['gather_cost']}"] == min(entry["ms"].values())
    assert_same_outputs(mobile, program, (64, 64, 3))
    again = SparseGatedModel(mobile)
    assert again.tune() == "xla" and again.from_cache
    assert_same_outputs(mobile, again, (64, 64, 3))


def test_forcing_an_engine_skips_tuning(cache, model):
    for engine in ("native", "xla"):
        program = SparseGatedModel(model, engine=engine)
        assert program.tune() == engine
        assert np.asarray(program(np.zeros((1, *SHAPE), np.float32))).shape == (1, 10)
    assert not cache.exists()
    with pytest.raises(ValueError, match="Invalid value received for argument `engine`"):
        SparseGatedModel(model, engine="gpu")
