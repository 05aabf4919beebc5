"""Where a sparse program's time goes, layer by layer: each convolution's stages on the native runtime (gate and
ranking, image patches, kernel gather, the matrix product, scale and activation) beside the same layer of the dense
model on the same runtime. What `bench` prints with `system.bench.profile=true`.
"""

import statistics
import time

from mayo_lite.sparse import native_runtime
from mayo_lite.sparse.tuning import layer_inputs

STAGES = ("gate", "patches", "gather", "multiply", "scale")


def _stage_times(operation, features, repeats):
    """{stage: median ms} of one operation on its input features (a convolution by stage, others as `total`)."""
    samples = {}
    for _ in range(repeats):
        marks = [("start", time.perf_counter())]
        if isinstance(operation, native_runtime.Convolution):
            operation(*features, clock=lambda stage: marks.append((stage, time.perf_counter())))
        else:
            operation(*features)
            marks.append(("total", time.perf_counter()))
        for (_, before), (stage, after) in zip(marks, marks[1:]):
            samples.setdefault(stage, []).append((after - before) * 1000)
    return {stage: statistics.median(values) for stage, values in samples.items()}


def profile(sparse, dense, image, repeats=20):
    """Rows `{layer, mode, stages: {stage: ms}, total, dense}` for every operation of `sparse`'s native program,
    `dense` being the native program of the dense model (the same layer names); `dense` of a row is None where
    the dense model has no such layer."""
    dense_times = {}
    for operation, features in zip(dense.operations, layer_inputs(dense, image)):
        operation(*features)
        dense_times[operation.name] = sum(_stage_times(operation, features, repeats).values())
    rows = []
    for operation, features in zip(sparse.operations, layer_inputs(sparse, image)):
        operation(*features)
        stages = _stage_times(operation, features, repeats)
        rows.append({"layer": operation.name, "mode": getattr(operation, "mode", "") if getattr(
            operation, "gated", False) else "", "stages": stages, "total": sum(stages.values()),
            "dense": dense_times.get(operation.name)})
    return rows


def table(rows):
    """Lines of a table of `profile`'s rows, with a total."""
    header = f"  {'layer':<14} {'mode':<7}" + "".join(f"{stage:>9}" for stage in STAGES) + \
        f"{'total':>9} {'dense':>9} {'×dense':>7}"
    lines = [header]
    for row in rows:
        if set(row["stages"]) <= {"total"} and row["total"] < 0.005:
            continue  # identity, reshape: nothing to see
        cells = "".join(f"{row['stages'][stage]:9.3f}" if stage in row["stages"] else f"{'':>9}"
                        for stage in STAGES)
        dense = f"{row['dense']:9.3f} {row['dense'] / row['total']:7.2f}" if row["dense"] else f"{'':>9} {'':>7}"
        lines.append(f"  {row['layer']:<14} {row['mode']:<7}{cells}{row['total']:9.3f} {dense}")
    total = sum(row["total"] for row in rows)
    dense_total = sum(row["dense"] or 0.0 for row in rows)
    sums = "".join(f"{sum(row['stages'].get(stage, 0.0) for row in rows):9.3f}" for stage in STAGES)
    lines.append(f"  {'all layers':<14} {'':<7}{sums}{total:9.3f} {dense_total:9.3f} {dense_total / total:7.2f}")
    return lines
